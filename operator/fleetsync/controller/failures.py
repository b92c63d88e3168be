"""Per-object backoff for reconciles that keep failing.

An object whose reconcile raises is not tried again on every tick: its next attempt waits
``Backoff(base=tick, cap=300 s, jitter="equal")`` — after the n-th consecutive failure
between half and all of ``min(300, tick * 2**(n-1))`` seconds, so never sooner than half a
tick and never later than five minutes. The first failure is logged with its traceback, the
following ones in one line each. A success, or a new version of the object from the watch
(someone fixed it), clears the count. Other objects are not held up by a failing one.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from fleetsync.backoff import Backoff
from fleetsync.controller.cache import Key

__all__ = ["BACKOFF_CAP_SECONDS", "FailureBackoff"]

log = logging.getLogger("fleetsync.controller")
BACKOFF_CAP_SECONDS = 300.0


@dataclass(slots=True)
class _Failing:
    attempts: int
    not_before: float


class FailureBackoff:
    def __init__(self, tick_seconds: float, *, rng: random.Random | None = None) -> None:
        self.policy = Backoff(base=tick_seconds, cap=BACKOFF_CAP_SECONDS, jitter="equal")
        self._rng = rng or random.Random()
        self._failing: dict[tuple[str, Key], _Failing] = {}

    def due(self, kind: str, key: Key, now: float) -> bool:
        failing = self._failing.get((kind, key))
        return failing is None or now >= failing.not_before

    def failed(self, kind: str, key: Key, now: float, error: BaseException) -> float:
        """Record a failure (call inside ``except``); returns the delay before the next try."""
        failing = self._failing.setdefault((kind, key), _Failing(0, now))
        failing.attempts += 1
        delay = self.policy.delay(failing.attempts, self._rng)
        failing.not_before = now + delay
        if failing.attempts == 1:
            log.exception("reconciling %s %s/%s", kind, *key)
        else:
            log.warning(
                "reconciling %s %s/%s failed again (%d in a row: %s); next try in %.0f s",
                kind,
                *key,
                failing.attempts,
                error,
                delay,
            )
        return delay

    def succeeded(self, kind: str, key: Key) -> None:
        self._failing.pop((kind, key), None)

    def attempts(self, kind: str, key: Key) -> int:
        failing = self._failing.get((kind, key))
        return failing.attempts if failing else 0
