"""Adaptive concurrency per vendor: AIMD steered by 429s, errors and a latency gradient.

Grow by one after ``limit`` successes (about one round trip at full concurrency) while the
vendor's latency stays near its no-load baseline; shrink multiplicatively on 429s (x0.5)
and errors (x0.8) — at most once per latency window, so one overshoot's burst of 429s halves
once rather than collapsing to ``min`` — and gently (x0.9) when recent latency exceeds twice
the baseline, which is how a vendor says "queueing" before it says 429. Hand-written: the
libraries that do this (e.g. Netflix's concurrency-limits) are Java; nothing on PyPI fits.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

from fleetsync.api.v1alpha1.syncjob import Concurrency as ConcurrencySpec

__all__ = ["AdaptiveConcurrency", "ConcurrencyGate"]

_RECENT = 32


class AdaptiveConcurrency:
    def __init__(
        self, spec: ConcurrencySpec, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._spec = spec
        self._clock = clock
        self._limit = float(spec.initial)
        self._successes = 0
        self._recent: deque[float] = deque(maxlen=_RECENT)
        self._baseline: float | None = None
        self._baseline_at = clock()
        self._last_decrease = -1e9
        self.adaptive = spec.mode == "adaptive"

    @property
    def limit(self) -> int:
        return int(self._limit)

    def _clamp(self) -> None:
        self._limit = min(float(self._spec.max), max(float(self._spec.min), self._limit))

    def _window(self) -> float:
        return max(0.05, statistics.median(self._recent)) if self._recent else 0.1

    def _decrease(self, factor: float) -> None:
        now = self._clock()
        if now - self._last_decrease < self._window():
            return
        self._last_decrease = now
        self._limit *= factor
        self._successes = 0
        self._clamp()

    def on_success(self, latency_seconds: float) -> None:
        if not self.adaptive:
            return
        self._recent.append(latency_seconds)
        # The baseline follows the fastest answers, drifting upward slowly (doubling in about
        # ten minutes) so a vendor that got permanently slower becomes its new normal.
        now = self._clock()
        if self._baseline is None or latency_seconds < self._baseline:
            self._baseline = latency_seconds
        else:
            self._baseline *= 1 + (now - self._baseline_at) / 900
        self._baseline_at = now
        if len(self._recent) >= 8 and statistics.median(self._recent) > 2 * self._baseline:
            self._decrease(0.9)
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self._limit += 1
            self._clamp()

    def on_throttle(self) -> None:
        if self.adaptive:
            self._decrease(0.5)

    def on_error(self) -> None:
        if self.adaptive:
            self._decrease(0.8)


class ConcurrencyGate:
    """A semaphore whose size follows :attr:`AdaptiveConcurrency.limit`, even downward."""

    def __init__(self, controller: AdaptiveConcurrency) -> None:
        self._controller = controller
        self._in_flight = 0
        self._released = asyncio.Condition()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def __aenter__(self) -> None:
        async with self._released:
            await self._released.wait_for(lambda: self._in_flight < self._controller.limit)
            self._in_flight += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._released:
            self._in_flight -= 1
            self._released.notify_all()
