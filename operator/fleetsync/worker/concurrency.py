"""Adaptive concurrency per vendor: AIMD steered by 429s, errors and a latency gradient.

Start like TCP's slow start: one more per success (the limit doubles every round trip) until
the first sign of pushback — a 429, an error, or the median of the last few answers rising
past the lowest such median seen (the vendor, or our own event loop, began to queue). The
additive rule alone took ~240 round trips from 16 to 256 against a vendor that never
pushes back: 7,000 items at 50 ms ran 1.30x slower than at fixed 256 (now 1.01x,
bench/results.md section 1). Growth waits for the first round trip's answers, so a vendor
that throttles at once sees only the initial limit's overshoot. After slow start ends it
does not resume: the rules below take over.

Then grow by one after ``limit`` successes (about one round trip at full concurrency) while the
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

A vendor that throttles by *rate* (429 past N requests/s) is not served well by halving
concurrency: the limit climbs back and hits it again, every cycle a burst of 429s (8 % of
calls in bench/results.md section 4). So the first 429 also teaches a :class:`RateCeiling`:
the rate the vendor accepted over the last second, of which the gate then sends at most
95 % in any one-second window; later 429s re-learn it (lower), and a quiet second spent at
the ceiling probes upward in growing steps, so a limit that rises is found again. From then
on 429s move the ceiling, not the concurrency, and the concurrency stays within twice what
the ceiling needs (rate x latency, Little's law): more in flight only turns a probe that
overshoots into a bigger burst of 429s.

Hand-written: the libraries that do this (e.g. Netflix's concurrency-limits) are Java;
nothing on PyPI fits.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

from fleetsync.api.v1alpha1.syncjob import Concurrency as ConcurrencySpec

__all__ = ["SENT_AT", "AdaptiveConcurrency", "ConcurrencyGate", "RateCeiling", "RollingMedian"]

_RECENT = 128  # answers the median is taken over: enough that its noise is far below 2x
_TOLERANCE = 2.0  # recent median over baseline beyond which the vendor is taken to queue
_IMPROVED = 0.95  # a cut worked if the median fell below this fraction of the one before it
_RATE_WINDOW = 1.0  # seconds a vendor counts its rate limit over (requests per second)
_RATE_MARGIN = 0.95  # hold this fraction of the rate the vendor accepted when it said 429
_RATE_CUT = 0.85  # held at the ceiling and still throttled: the limit fell at least this much
_START_RECENT = 16  # answers slow start takes its median over: it must react within a round trip
_START_TOLERANCE = 1.3  # that median over the lowest seen: the vendor began to queue
_IN_FLIGHT_ROOM = 2.0  # in flight under a learned rate: this many times rate x latency
_SAME_OVERSHOOT = 0.1  # without a send time: 429s this soon after a cut are the same overshoot
# When the request now being answered was sent (set by the gate in the item's task): a 429
# for a request sent before the last cut answers the overshoot that cut already answered.
SENT_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar("sent_at", default=None)
# Without a 429 for this long (and for this many requests, so a probe costs a slow vendor
# no larger share of 429s than a fast one) the ceiling probes upward.
_QUIET, _QUIET_CALLS = 1.0, 60
# The first probe's step up, x4 after each probe that passed, to at most this. Each probe
# waits for the next burst at the ceiling (about a second); growing x2 took six probes to
# follow a limit raised from 60 to 250 req/s (bench section 4, 0.72x the best fixed), x4
# takes four. Steady state is unchanged: a 429 resets the step.
_PROBE_FIRST, _PROBE_MAX, _PROBE_GROWTH = 0.05, 1.0, 4


class RateCeiling:
    """The rate past which a vendor answers 429, learned from its answers; pure (the clock
    is given), so the policy is tested against a synthetic vendor.

    ``delay(now)`` says how long the next request must wait so that no one-second window
    holds more than :attr:`rate` sends (a sliding window: no wall-clock second either, which
    is how vendors count). Until the first 429 there is no ceiling."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self._sends: deque[float] = deque()  # send times within the last window
        self._accepted: deque[float] = deque()  # send times of answers the vendor accepted
        self._last_cut = -1e9
        self._last_throttle = -1e9
        self._last_probe = -1e9
        self._saturated_at = -1e9  # the last time a send had to wait for the ceiling
        self._step = _PROBE_FIRST
        self._before_probe: float | None = None  # the rate the last probe raised
        # Just after a cut: [answers accepted in its window so far, the most it may learn].
        self._learning: list[float] | None = None

    def _expire(self, now: float) -> None:
        edge = now - _RATE_WINDOW
        while self._sends and self._sends[0] <= edge:
            self._sends.popleft()
        while self._accepted and self._accepted[0] <= edge:
            self._accepted.popleft()

    def delay(self, now: float) -> float:
        """Seconds until one more send keeps every window within the ceiling (0: at once)."""
        if self.rate is None:
            return 0.0
        self._expire(now)
        allowed = max(1, int(self.rate))
        if len(self._sends) < allowed:
            return 0.0
        self._saturated_at = now
        return max(1e-3, self._sends[len(self._sends) - allowed] + _RATE_WINDOW - now)

    def on_send(self, now: float) -> None:
        self._expire(now)
        self._sends.append(now)
        self._probe(now)

    def on_accepted(self, now: float, latency: float) -> None:
        sent = now - latency  # what the vendor counted
        self._accepted.append(sent)
        learning, cut = self._learning, self._last_cut
        if learning is None or self.rate is None or now - cut >= _SAME_OVERSHOOT:
            return
        if cut - _RATE_WINDOW < sent <= cut:  # in flight at the cut, in the window it measured
            learning[0] += 1
            self.rate = max(self.rate, min(learning[1], _RATE_MARGIN * learning[0]))

    def on_throttle(self, now: float, sent_at: float | None = None) -> None:
        since_cut, self._last_throttle = now - self._last_cut, now
        self._step = _PROBE_FIRST
        if sent_at is not None and sent_at <= self._last_cut:
            return
        if sent_at is None and since_cut < _SAME_OVERSHOOT:
            return
        self._last_cut = now
        self._expire(now)
        self._learning = None
        if self._before_probe is not None and now - self._last_probe < _RATE_WINDOW:
            self.rate, self._before_probe = self._before_probe, None  # the probe was too much
            return
        self._before_probe = None
        cap = math.inf
        if self.rate is not None and now - self._saturated_at < _RATE_WINDOW:
            # Held at the ceiling and throttled all the same: the vendor's limit fell. A
            # second cut soon after the first says it fell far.
            cap = (_RATE_CUT if since_cut > 2 * _RATE_WINDOW else 0.7) * self.rate
        target = max(1.0, min(cap, _RATE_MARGIN * len(self._accepted)))
        self.rate = target if self.rate is None else max(1.0, min(self.rate, target))
        self._learning = [float(len(self._accepted)), cap]

    def _probe(self, now: float) -> None:
        """Quiet at the ceiling for a while: try a little more, a little more each time."""
        if self.rate is None or now - self._last_throttle < max(_QUIET, _QUIET_CALLS / self.rate):
            return
        if now - self._saturated_at > _RATE_WINDOW or now - self._last_probe < _RATE_WINDOW:
            return
        self._last_probe, self._before_probe = now, self.rate
        self.rate *= 1 + self._step
        self._step = min(_PROBE_MAX, self._step * _PROBE_GROWTH)


class RollingMedian:
    """The median of the last ``size`` values, equal to ``statistics.median`` over them.

    Adaptive concurrency takes a median per answer; sorting 128 floats each time was 4 % of
    a shard's CPU (py-spy, bench section 1). Here the window is also kept sorted (bisect),
    so an answer costs one insertion and one removal. Not a library: the one candidate
    (sortedcontainers) would be a dependency for twenty lines."""

    def __init__(self, size: int) -> None:
        self._arrived: deque[float] = deque()
        self._sorted: list[float] = []
        self._size = size

    def __len__(self) -> int:
        return len(self._arrived)

    def append(self, value: float) -> None:
        if len(self._arrived) == self._size:
            del self._sorted[bisect.bisect_left(self._sorted, self._arrived.popleft())]
        self._arrived.append(value)
        bisect.insort(self._sorted, value)

    def median(self) -> float:
        """As ``statistics.median``: the middle value, or the mean of the two middle ones."""
        ordered, n = self._sorted, len(self._sorted)
        if not n:
            raise statistics.StatisticsError("no median for empty data")
        if n % 2:
            return ordered[n // 2]
        return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


class AdaptiveConcurrency:
    def __init__(
        self, spec: ConcurrencySpec, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._spec = spec
        self._clock = clock
        self._limit = float(spec.initial)
        self._successes = 0
        self._recent = RollingMedian(_RECENT)
        self._baseline: float | None = None
        self._baseline_at = clock()
        self._last_decrease = -1e9
        self._median_at_cut: float | None = None
        self.adaptive = spec.mode == "adaptive"
        self.ceiling = RateCeiling()
        self.slow_start = self.adaptive
        self._start_recent = RollingMedian(_START_RECENT)
        self._start_floor = math.inf

    @property
    def limit(self) -> int:
        return int(self._limit)

    def _clamp(self) -> None:
        self._limit = min(float(self._spec.max), max(float(self._spec.min), self._limit))

    def _window(self) -> float:
        return max(0.05, self._recent.median()) if self._recent else 0.1

    def _decrease(self, factor: float) -> None:
        now = self._clock()
        if now - self._last_decrease < self._window():
            return
        self._last_decrease = now
        self.slow_start = False
        self._limit *= factor
        self._successes = 0
        self._clamp()

    def now(self) -> float:
        return self._clock()

    def on_success(self, latency_seconds: float) -> None:
        if not self.adaptive:
            return
        self.ceiling.on_accepted(self._clock(), latency_seconds)
        self._recent.append(latency_seconds)
        if len(self._recent) >= 8:
            median = self._recent.median()
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
        if self.slow_start and self._still_starting(latency_seconds):
            self._limit += 1
            self._clamp()
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self._limit = max(self._limit, min(self._limit + 1, self._room()))
            self._clamp()

    def _room(self) -> float:
        """The most worth having in flight under a learned rate ceiling (no bound without)."""
        if self.ceiling.rate is None or not self._recent:
            return math.inf
        return max(1.0, _IN_FLIGHT_ROOM * self.ceiling.rate * self._window())

    def _still_starting(self, latency_seconds: float) -> bool:
        """Slow start goes on while the short median stays near the lowest one seen; it
        grows nothing until that median exists (the first round trip of answers), so a
        vendor that throttles at once sees no more than the initial limit's overshoot."""
        self._start_recent.append(latency_seconds)
        if len(self._start_recent) < _START_RECENT:
            return False
        median = self._start_recent.median()
        self._start_floor = min(self._start_floor, median)
        if median > _START_TOLERANCE * self._start_floor:
            self.slow_start = False
        return self.slow_start

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
        if not self.adaptive:
            return
        learned = self.ceiling.rate is not None
        self.slow_start = False
        self.ceiling.on_throttle(self._clock(), SENT_AT.get())
        if not learned:  # the first overshoot: also stop the flood of requests in flight
            self._decrease(0.5)
            # ... and keep no more in flight than the learned rate needs (Little's law, with
            # room for twice the latency): a slow start may have ended far above it, and
            # every request in flight beyond it is one more 429 when a probe overshoots.
            self._limit = min(self._limit, self._room())
            self._clamp()

    def on_error(self) -> None:
        if self.adaptive:
            self._decrease(0.8)


class ConcurrencyGate:
    """A semaphore whose size follows :attr:`AdaptiveConcurrency.limit`, even downward.

    Waiters are served first come, first served; each release lets in as many as the limit
    has room for then (one, or more after the limit grew). Written here rather than as an
    ``asyncio.Condition``: a condition wakes every waiter on each release to re-check, and
    this runs once per request (the dispatch loop enters it, the item's task leaves it)."""

    def __init__(self, controller: AdaptiveConcurrency) -> None:
        self._controller = controller
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def acquire(self) -> None:
        """Take a slot, then wait for room in the learned rate (:class:`RateCeiling`). The
        send's time is left in :data:`SENT_AT` of the caller's context (a task started
        after this copies it)."""
        if self._waiters or self._in_flight >= self._controller.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # the slot is counted by whoever woke it
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.release()  # woken and cancelled at once: hand the slot on
                elif waiter in self._waiters:  # a release may have passed over it already
                    self._waiters.remove(waiter)
                raise
        else:
            self._in_flight += 1
        ceiling, now = self._controller.ceiling, self._controller.now
        try:
            wait = ceiling.delay(now())
            while wait > 0:  # the learned rate: a send waits for room in the last second
                await asyncio.sleep(wait)
                wait = ceiling.delay(now())
        except BaseException:
            self.release()
            raise
        ceiling.on_send(sent := now())
        SENT_AT.set(sent)

    def hold(self) -> None:
        """Count a slot without waiting for room: only to keep a later :meth:`release`
        balanced (an item cancelled while it waited outside the gate)."""
        self._in_flight += 1

    def release(self) -> None:
        self._in_flight -= 1
        waiters, limit = self._waiters, self._controller.limit
        while waiters and self._in_flight < limit:
            waiter = waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
