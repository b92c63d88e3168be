"""Which vendor failures to retry, how often, and how long to wait (the manifest's
``source.retry``). The waiting itself is :class:`fleetsync.backoff.Backoff`, shared with the
sinks and the worker's reports.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from typing import Literal

from fleetsync.api.v1alpha1.syncjob import Retry
from fleetsync.backoff import Backoff

__all__ = ["RetryPolicy", "parse_retry_after"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_seconds: float
    jitter: Literal["full", "equal", "none"]
    retry_on: frozenset[str]

    @classmethod
    def from_spec(cls, spec: Retry) -> RetryPolicy:
        return cls(
            max_attempts=spec.max_attempts,
            base_seconds=spec.backoff.base_seconds,
            max_seconds=spec.backoff.max_seconds,
            jitter=spec.backoff.jitter,
            retry_on=frozenset(spec.retry_on),
        )

    def retryable(
        self, *, status: int | None = None, timeout: bool = False, connect: bool = False
    ) -> bool:
        if timeout:
            return "timeout" in self.retry_on
        if connect:
            return "connect" in self.retry_on
        if status is None:
            return False
        return str(status) in self.retry_on or f"{status // 100}xx" in self.retry_on

    def attempts_left(self, failed_attempt: int) -> bool:
        return failed_attempt < self.max_attempts

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.base_seconds, self.max_seconds, self.jitter)

    def delay(
        self, failed_attempt: int, *, retry_after: float | None = None, rng: random.Random
    ) -> float:
        return self.backoff.delay(failed_attempt, rng, retry_after=retry_after)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP-date); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
