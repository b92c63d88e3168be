"""Which failures to retry, and how long to wait: capped exponential backoff with jitter.

Full jitter (AWS's "Exponential Backoff And Jitter") spreads retries of many shards so a
recovering vendor is not hit by a synchronised wave; a vendor's ``Retry-After`` is a floor.
Hand-written because the policy must be data (built from the manifest), side-effect free
and driven by an injectable random source; tenacity's decorators are built around wrapping
a call, which the engine's per-attempt rate-limit slot and breaker check don't fit.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from typing import Literal

from fleetsync.api.v1alpha1.syncjob import Retry

__all__ = ["RetryPolicy", "parse_retry_after"]

_RETRY_AFTER_CAP = 300.0


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

    def delay(
        self, failed_attempt: int, *, retry_after: float | None = None, rng: random.Random
    ) -> float:
        cap = min(self.max_seconds, self.base_seconds * 2 ** max(0, failed_attempt - 1))
        if self.jitter == "full":
            wait = rng.uniform(0, cap)
        elif self.jitter == "equal":
            wait = cap / 2 + rng.uniform(0, cap / 2)
        else:
            wait = cap
        if retry_after is not None:
            wait = max(wait, min(retry_after, _RETRY_AFTER_CAP))
        return wait


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
