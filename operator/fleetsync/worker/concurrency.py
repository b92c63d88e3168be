"""Adaptive concurrency per vendor: AIMD steered by 429s, errors and a latency gradient.

Grow by one after ``limit`` successes (about one round trip at full concurrency) while the
vendor's latency stays near its no-load baseline; shrink multiplicatively on 429s (x0.5)
and errors (x0.8) — at most once per latency window, so one overshoot's burst of 429s halves
once rather than collapsing to ``min`` — and gently (x0.9) when recent latency exceeds twice
the baseline, which is how a vendor says "queueing" before it says 429.

A latency cut is a hypothesis: "our concurrency made the vendor queue". If the next cut
finds the recent median no lower than it was at the last cut, the hypothesis is wrong — the
baseline was a lucky outlier of a wide latency spread, or the slowness is ours (a busy
client's event loop) — so the baseline moves up to the present latency instead of cutting
again. Without that check a vendor with a naturally wide spread, or a loaded machine,
drove the limit to ``min`` and kept it there (7,000 items at 50 ms took 146 s instead of 8).

Hand-written: the libraries that do this (e.g. Netflix's concurrency-limits) are Java;
nothing on PyPI fits.
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

_RECENT = 128  # answers the median is taken over: enough that its noise is far below 2x
_TOLERANCE = 2.0  # recent median over baseline beyond which the vendor is taken to queue
_IMPROVED = 0.95  # a cut worked if the median fell below this fraction of the one before it


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
        self._median_at_cut: float | None = None
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
        if len(self._recent) >= 8:
            median = statistics.median(self._recent)
            # The baseline is the lowest *median* seen (a single fast answer says nothing of
            # the vendor's no-load latency), drifting upward slowly (doubling in about ten
            # minutes) so a vendor that got permanently slower becomes its new normal.
            now = self._clock()
            if self._baseline is None or median < self._baseline:
                self._baseline = median
            else:
                self._baseline *= 1 + (now - self._baseline_at) / 900
            self._baseline_at = now
            self._judge_last_cut(median, now)
            if median > _TOLERANCE * self._baseline and self._latency_cut(median):
                return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self._limit += 1
            self._clamp()

    def _latency_cut(self, median: float) -> bool:
        """Cut for queueing (once per window); the next windows judge whether it helped."""
        now = self._clock()
        if self._median_at_cut is None and now - self._last_decrease >= self._window():
            self._median_at_cut = median
            self._decrease(0.9)
        return True

    def _judge_last_cut(self, median: float, now: float) -> None:
        """Two windows after a latency cut: if the median did not fall, the latency is not
        queueing we caused (see the module docstring), so it becomes the baseline."""
        before = self._median_at_cut
        if before is None or self._baseline is None:
            return
        if now - self._last_decrease < 2 * self._window():
            return
        if median > _IMPROVED * before:
            self._baseline = max(self._baseline, median / _TOLERANCE)
        self._median_at_cut = None

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
