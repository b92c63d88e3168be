"""How long a sink keeps retrying a transient failure before it calls itself unusable.

Throttling, UnprocessedItems/Keys, connection resets, 5xx answers and a PostgreSQL restart
all pass; a shard that crashed on them would lose its place for nothing. So every sink
retries them, waiting by the one backoff policy (:class:`fleetsync.backoff.Backoff`), and
only when the budget (attempts and seconds, whichever runs out first) is spent raises
:class:`fleetsync.errors.SinkError`. Writes are idempotent upserts, so a retried statement
whose first attempt did land changes nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fleetsync.backoff import Backoff

__all__ = ["Attempts", "SinkRetry"]


@dataclass(frozen=True, slots=True)
class SinkRetry:
    """The budget of one sink operation. The defaults wait about 25 s in expectation over
    16 attempts: enough for a throttled table to recover or a database to restart."""

    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.05, cap=5.0))
    attempts: int = 16
    seconds: float = 120.0


class Attempts:
    """The failures of one operation so far; :meth:`next_delay` says how long to wait before
    the next attempt, or None when the budget is spent."""

    def __init__(
        self,
        policy: SinkRetry,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.failed = 0
        self._rng = rng
        self._clock = clock
        self._started = clock()

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    def next_delay(self) -> float | None:
        self.failed += 1
        if self.failed >= self.policy.attempts or self.elapsed >= self.policy.seconds:
            return None
        return self.policy.backoff.delay(self.failed, self._rng)

    def gave_up(self, what: str, cause: str) -> str:
        """The message of the SinkError raised when the budget is spent."""
        return f"{what} still failing after {self.failed} attempts in {self.elapsed:.1f}s: {cause}"
