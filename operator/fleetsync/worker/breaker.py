"""A per-vendor circuit breaker with the API's fields, and a fleet-wide override.

Closed → Open when, within the last ``windowSeconds``, at least ``minimumCalls`` calls were
made and ``failureRateThreshold`` % of them failed. Open → HalfOpen after ``openSeconds``;
HalfOpen lets ``halfOpenCalls`` trial calls through: all succeed → Closed, any fails → Open.
The coordinator can force a verdict seen on other shards (:meth:`force`), so one vendor's
outage stops every shard, not each after its own twenty failures.

An open breaker defers calls, it does not fail them: :meth:`CircuitBreaker.wait_ready`
waits until a call may pass again (half-open with a free trial, or closed). The *outage*
runs from the moment the breaker left Closed until it is Closed again (half-open probes
that fail do not end it); past ``maxOutageSeconds`` the wait gives up and the caller fails
its item with the vendor's last real cause.

Callers record only vendor-availability failures (5xx, timeouts, refused connections):
429s are the rate limiter's business and a malformed payload is one item's problem.
Hand-written because pybreaker/aiobreaker count consecutive failures rather than a rate over
a time window, and offer neither an injectable clock nor an external verdict.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fleetsync.api.constants import BreakerState
from fleetsync.api.v1alpha1.syncjob import CircuitBreaker as CircuitBreakerSpec

__all__ = ["BreakerSnapshot", "CircuitBreaker"]

# How often a waiter looks again while nothing but a probe's answer or a fleet-wide verdict
# can change the state (half-open with every trial out, or forced open).
_POLL_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    state: BreakerState
    since: float
    calls_in_window: int
    failures_in_window: int
    forced: bool


class CircuitBreaker:
    def __init__(
        self,
        spec: CircuitBreakerSpec,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[BreakerState, BreakerState], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._spec = spec
        self._clock = clock
        self._sleep = sleep
        self._outage_since: float | None = None
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._since = clock()
        self._window: deque[tuple[float, bool]] = deque()
        self._failures = 0
        self._trials_out = 0
        self._trial_successes = 0
        self._forced = False

    def _move(self, state: BreakerState) -> None:
        if state is self._state:
            return
        old, self._state, self._since = self._state, state, self._clock()
        if state is BreakerState.CLOSED:
            self._outage_since = None
        elif self._outage_since is None:
            self._outage_since = self._since
        self._window.clear()
        self._failures = 0
        self._trials_out = 0
        self._trial_successes = 0
        if self._on_transition is not None:
            self._on_transition(old, state)

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._since >= self._spec.open_seconds
        ):
            self._move(BreakerState.HALF_OPEN)
        return self._state

    @property
    def since(self) -> float:
        return self._since

    def outage_seconds(self) -> float:
        """How long the breaker has been away from Closed (0 while Closed)."""
        _ = self.state  # moves Open -> HalfOpen when due
        return 0.0 if self._outage_since is None else self._clock() - self._outage_since

    def outage_exceeded(self) -> bool:
        return self.outage_seconds() >= self._spec.max_outage_seconds

    def ready(self) -> bool:
        """Whether :meth:`allow` would let a call through now (without taking a trial)."""
        state = self.state
        if state is BreakerState.HALF_OPEN:
            return self._trials_out + self._trial_successes < self._spec.half_open_calls
        return state is BreakerState.CLOSED

    async def wait_ready(self, stop: asyncio.Event | None = None) -> bool:
        """Wait until a call may pass: True. False when the outage has lasted past
        ``maxOutageSeconds`` (a probe still goes when half-open has a free trial) or
        ``stop`` is set."""
        while not self.ready():
            if self.outage_exceeded() or (stop is not None and stop.is_set()):
                return False
            await self._sleep(self._pause())
        return True

    def _pause(self) -> float:
        now = self._clock()
        left = self._spec.max_outage_seconds - (now - (self._outage_since or now))
        pause = min(left, _POLL_SECONDS)
        if self._state is BreakerState.OPEN:
            pause = min(pause, self._since + self._spec.open_seconds - now)
        return max(pause, 0.001)

    def allow(self) -> bool:
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        if self._trials_out + self._trial_successes < self._spec.half_open_calls:
            self._trials_out += 1
            return True
        return False

    def release(self) -> None:
        """A call :meth:`allow` let through ended saying nothing about the vendor's
        availability (a 429, a 4xx, a request not built): give back its half-open trial,
        or the breaker would wait for an answer that never comes."""
        if self._state is BreakerState.HALF_OPEN:
            self._trials_out = max(0, self._trials_out - 1)

    def _prune(self, now: float) -> None:
        horizon = now - self._spec.window_seconds
        while self._window and self._window[0][0] < horizon:
            _, ok = self._window.popleft()
            self._failures -= not ok

    def record(self, success: bool) -> None:
        state = self.state
        now = self._clock()
        if state is BreakerState.HALF_OPEN:
            self._trials_out = max(0, self._trials_out - 1)
            if not success:
                self._forced = False  # our own probe failed: this is now a local verdict
                self._move(BreakerState.OPEN)
                return
            self._trial_successes += 1
            if self._trial_successes >= self._spec.half_open_calls:
                self._forced = False
                self._move(BreakerState.CLOSED)
            return
        if state is BreakerState.OPEN:
            return  # a call that left before the breaker opened
        self._window.append((now, success))
        self._failures += not success
        self._prune(now)
        calls = len(self._window)
        if (
            calls >= self._spec.minimum_calls
            and self._failures * 100 / calls >= self._spec.failure_rate_threshold
        ):
            self._move(BreakerState.OPEN)

    def force(self, state: BreakerState | None) -> None:
        """Apply a fleet-wide verdict. Open: stop now (idempotent: a breaker already open or
        probing keeps its timer). None/Closed: back to local judgement."""
        if state is BreakerState.OPEN:
            if self._state is BreakerState.CLOSED:
                self._forced = True
                self._move(BreakerState.OPEN)
        elif self._forced and self._state is not BreakerState.CLOSED:
            self._forced = False
            self._move(BreakerState.CLOSED)
        else:
            self._forced = False

    def snapshot(self) -> BreakerSnapshot:
        state = self.state
        self._prune(self._clock())
        return BreakerSnapshot(state, self._since, len(self._window), self._failures, self._forced)
