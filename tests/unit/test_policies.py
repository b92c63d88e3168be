"""Retry, circuit breaker and adaptive concurrency: the policies, with fake clocks."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from collections import deque

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fleetsync.api.constants import BreakerState
from fleetsync.api.v1alpha1.syncjob import CircuitBreaker as BreakerSpec
from fleetsync.api.v1alpha1.syncjob import Concurrency, Retry
from fleetsync.worker.breaker import CircuitBreaker
from fleetsync.worker.concurrency import AdaptiveConcurrency, ConcurrencyGate, RollingMedian
from fleetsync.worker.retry import RetryPolicy, parse_retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_classifies_statuses_and_flags() -> None:
    policy = RetryPolicy.from_spec(Retry())
    assert policy.retryable(status=429) and policy.retryable(status=503)
    assert not policy.retryable(status=404)
    assert policy.retryable(timeout=True) and policy.retryable(connect=True)
    only_503 = RetryPolicy.from_spec(Retry(retry_on=["503"]))
    assert only_503.retryable(status=503) and not only_503.retryable(status=500)


def test_full_jitter_stays_under_the_capped_exponential() -> None:
    policy = RetryPolicy.from_spec(
        Retry.model_validate({"backoff": {"baseSeconds": 0.2, "maxSeconds": 2}})
    )
    rng = random.Random(1)
    for attempt, cap in [(1, 0.2), (2, 0.4), (3, 0.8), (6, 2.0)]:
        delays = [policy.delay(attempt, rng=rng) for _ in range(500)]
        assert min(delays) >= 0 and max(delays) <= cap
        assert max(delays) > cap * 0.9  # jitter uses the whole range
    assert policy.delay(1, retry_after=5, rng=rng) == 5  # Retry-After is a floor


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3", now=0) == 3
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


def spec(**kw: float) -> BreakerSpec:
    base = {"failureRateThreshold": 50, "minimumCalls": 10, "windowSeconds": 30,
            "openSeconds": 30, "halfOpenCalls": 3}  # fmt: skip
    return BreakerSpec.model_validate(base | kw)


def test_breaker_opens_on_failure_rate_and_recovers_through_half_open() -> None:
    clock = Clock()
    transitions: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        spec(), clock=clock, on_transition=lambda a, b: transitions.append((a, b))
    )
    for i in range(9):
        breaker.record(i % 2 == 0)  # 4 failures of 9: below minimumCalls
    assert breaker.state is BreakerState.CLOSED
    breaker.record(False)  # 5 of 10 = 50 %
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 30
    assert breaker.state is BreakerState.HALF_OPEN
    assert [breaker.allow() for _ in range(4)] == [True, True, True, False]
    for _ in range(3):
        breaker.record(True)
    assert breaker.state is BreakerState.CLOSED
    assert transitions == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


def test_failed_probe_reopens_and_old_failures_age_out() -> None:
    clock = Clock()
    breaker = CircuitBreaker(spec(), clock=clock)
    for _ in range(10):
        breaker.record(False)
    clock.now += 30
    assert breaker.allow()
    breaker.record(False)
    assert breaker.state is BreakerState.OPEN
    fresh = CircuitBreaker(spec(), clock=clock)
    for _ in range(6):
        fresh.record(False)
    clock.now += 31  # those failures left the window
    for _ in range(6):
        fresh.record(True)
    assert fresh.state is BreakerState.CLOSED


def test_fleet_verdict_opens_a_healthy_breaker_and_clears_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker(spec(), clock=clock)
    breaker.force(BreakerState.OPEN)
    assert not breaker.allow() and breaker.snapshot().forced
    since = breaker.since
    clock.now += 10
    breaker.force(BreakerState.OPEN)  # repeated verdicts do not restart the open timer
    assert breaker.since == since
    breaker.force(None)
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_fixed_concurrency_never_moves() -> None:
    limit = AdaptiveConcurrency(Concurrency(mode="fixed", initial=8))
    for _ in range(100):
        limit.on_success(0.01)
    limit.on_throttle()
    assert limit.limit == 8


def test_aimd_grows_halves_once_per_window_and_respects_bounds() -> None:
    clock = Clock()
    limit = AdaptiveConcurrency(Concurrency(initial=4, min=2, max=64), clock=clock)
    for _ in range(3000):
        limit.on_success(0.05)
    assert limit.limit == 64
    limit.on_throttle()
    limit.on_throttle()  # same window: the burst of 429s from one overshoot halves once
    assert limit.limit == 32
    # From the first 429 on, the learned rate answers 429s, not the concurrency.
    assert limit.ceiling.rate is not None
    for _ in range(10):
        clock.now += 1
        limit.on_throttle()
    assert limit.limit == 32 and limit.ceiling.rate >= 1
    limit.on_error()  # errors still cut concurrency (x0.8)
    assert limit.limit == 25
    for _ in range(10):
        clock.now += 1
        limit.on_error()
    assert limit.limit == 2


def test_slow_start_reaches_the_maximum_in_a_few_round_trips() -> None:
    # A vendor that never pushes back (50 ms, whatever the load): the limit doubles every
    # round trip once the first round trip's answers are in, instead of growing by one.
    clock = Clock()
    limit = AdaptiveConcurrency(Concurrency(initial=16, min=1, max=256), clock=clock)
    trips = 0
    while limit.limit < 256 and trips < 100:
        trips += 1
        clock.now += 0.05
        for _ in range(limit.limit):
            limit.on_success(0.05)
    assert trips <= 6, f"{trips} round trips from 16 to 256"


def test_slow_start_grows_nothing_before_the_first_round_trip_is_in() -> None:
    # Fifteen answers of the first round trip, then the vendor throttles: the limit never
    # rose above the initial 16, so its overshoot was the initial limit's alone.
    clock = Clock()
    limit = AdaptiveConcurrency(Concurrency(initial=16, min=1, max=256), clock=clock)
    for _ in range(15):
        limit.on_success(0.05)
    assert limit.limit == 16
    clock.now += 0.05
    limit.on_throttle()
    assert not limit.slow_start and limit.limit <= 16
    for _ in range(16):  # slow start is over: growth is additive from here
        clock.now += 0.001
        limit.on_success(0.05)
    assert limit.limit <= 17


def test_slow_start_ends_at_the_first_429_and_the_limit_fits_the_learned_rate() -> None:
    clock = Clock()
    limit = AdaptiveConcurrency(Concurrency(initial=16, min=1, max=256), clock=clock)
    for _ in range(4):  # 16 in flight, then about 32, 64, 128
        clock.now += 0.05
        for _ in range(limit.limit):
            limit.on_success(0.05)
    assert 100 <= limit.limit <= 256 and limit.slow_start
    limit.on_throttle()
    assert not limit.slow_start and limit.ceiling.rate is not None
    # Little's law with room: no more in flight than twice the learned rate x latency.
    assert limit.limit <= max(1, 2 * limit.ceiling.rate * 0.05)
    for _ in range(2000):
        clock.now += 0.001
        limit.on_success(0.05)
    assert limit.limit <= max(1, 2 * limit.ceiling.rate * 0.05) + 1


def test_latency_gradient_stops_growth_at_the_knee() -> None:
    clock = Clock()
    limit = AdaptiveConcurrency(Concurrency(initial=1, min=1, max=256), clock=clock)
    # A vendor that serves 20 requests at 50 ms; beyond that it queues (latency grows).
    for _ in range(20_000):
        clock.now += 0.001
        limit.on_success(0.05 * max(1.0, limit.limit / 20))
    assert 15 <= limit.limit <= 60


@pytest.mark.parametrize("spread", [1.5, 3.0, 6.0])
def test_a_wide_latency_spread_never_collapses_the_limit(spread: float) -> None:
    # A vendor whose latency does not depend on our concurrency (log-normal, p99 = spread x
    # p50): its fastest answers are far below the median, which must not read as queueing.
    clock = Clock()
    rng = random.Random(7)
    sigma = math.log(spread) / 2.326
    limit = AdaptiveConcurrency(Concurrency(initial=16, min=1, max=256), clock=clock)
    for _ in range(20_000):
        clock.now += 0.001
        limit.on_success(0.05 * math.exp(rng.gauss(0, sigma)))
    assert limit.limit >= 128


def test_a_busy_client_slows_growth_but_the_limit_recovers() -> None:
    # Five seconds in which every answer takes three times as long (our own event loop is
    # busy), then normal again: the limit may dip, but it must climb back.
    clock = Clock()
    limit = AdaptiveConcurrency(Concurrency(initial=16, min=1, max=256), clock=clock)
    for i in range(30_000):
        clock.now += 0.001
        busy = 5_000 <= i < 10_000
        limit.on_success(0.15 if busy else 0.05)
    assert limit.limit >= 128


async def test_gate_admits_at_most_limit_and_follows_it_down() -> None:
    controller = AdaptiveConcurrency(Concurrency(mode="fixed", initial=3, min=1, max=3))
    gate = ConcurrencyGate(controller)
    peak = 0
    release = asyncio.Event()

    async def work() -> None:
        nonlocal peak
        async with gate:
            peak = max(peak, gate.in_flight)
            await release.wait()

    tasks = [asyncio.create_task(work()) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert gate.in_flight == 3
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 3 and gate.in_flight == 0


class SetLimit(AdaptiveConcurrency):
    """A controller whose limit the test sets (the gate only reads it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(Concurrency(mode="fixed", initial=1, min=1, max=64))
        self.fixed = limit

    @property
    def limit(self) -> int:
        return self.fixed


gate_steps = st.lists(
    st.one_of(
        st.just(("arrive", 0)),
        st.just(("release", 0)),
        st.tuples(st.just("cancel"), st.integers(0, 7)),  # the n-th waiter gives up
        st.just(("release-then-cancel", 0)),  # the woken waiter is cancelled before it runs
        st.just(("cancel-then-release", 0)),  # a release comes before the cancelled one runs
        st.tuples(st.just("limit"), st.integers(1, 6)),
    ),
    max_size=60,
)


@given(gate_steps)
@example([("arrive", 0)] * 4 + [("release", 0)] * 2)  # the later waiter must not go first
@example([("arrive", 0)] * 4 + [("release-then-cancel", 0), ("release", 0)])
@example([("arrive", 0)] * 4 + [("cancel-then-release", 0), ("release", 0)])
def test_the_gate_serves_in_order_never_idles_a_slot_and_never_leaks_one(
    steps: list[tuple[str, int]],
) -> None:
    """Arrivals, releases, waiters that give up (also right after being woken) and limit
    changes either way: waiters get in first come, first served; no one waits while the
    limit has room; once every holder left, nothing is counted in flight."""

    async def scenario() -> None:
        controller = SetLimit(2)
        gate = ConcurrencyGate(controller)
        admitted: list[int] = []
        holders: deque[int] = deque()
        waiting: dict[int, asyncio.Task[None]] = {}
        arrived = 0

        async def enter(n: int) -> None:
            await gate.acquire()
            admitted.append(n)

        async def settle() -> None:
            for _ in range(3):
                await asyncio.sleep(0)
            for n in [n for n, task in waiting.items() if task.done()]:
                if not waiting.pop(n).cancelled():
                    holders.append(n)

        for op, arg in steps:
            if op == "arrive":
                waiting[arrived] = asyncio.create_task(enter(arrived))
                arrived += 1
            elif op == "release" and holders:
                holders.popleft()
                gate.release()
            elif op == "cancel" and waiting:
                waiting[sorted(waiting)[arg % len(waiting)]].cancel()
            elif op == "release-then-cancel" and holders and waiting:
                holders.popleft()
                gate.release()  # wakes the first waiter...
                waiting[min(waiting)].cancel()  # ...which gives up before it runs
            elif op == "cancel-then-release" and holders and waiting:
                waiting[min(waiting)].cancel()
                holders.popleft()
                gate.release()  # passes over the cancelled waiter to the next
            elif op == "limit":
                controller.fixed = arg
            await settle()
            assert gate.in_flight == len(holders)
            assert admitted == sorted(admitted)  # first come, first served
            if waiting and not any(op == "limit" for op, _ in steps):
                assert gate.in_flight >= controller.limit  # nobody waits beside a free slot
        while holders:
            holders.popleft()
            gate.release()
            await settle()
        assert not waiting or gate.in_flight >= controller.limit  # ...only past the limit
        for task in waiting.values():
            task.cancel()
        await settle()
        while holders:
            holders.popleft()
            gate.release()
        assert gate.in_flight == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("threshold", [50, 100])
def test_breaker_threshold_boundaries(threshold: float) -> None:
    breaker = CircuitBreaker(spec(failureRateThreshold=threshold), clock=Clock())
    for i in range(10):
        breaker.record(i >= 5)
    assert (breaker.state is BreakerState.OPEN) == (threshold <= 50)


@given(
    size=st.integers(1, 20),
    values=st.lists(st.floats(0, 10, allow_nan=False) | st.sampled_from([0.05, 0.1]), max_size=80),
)
def test_the_rolling_median_is_the_median_of_the_last_values(
    size: int, values: list[float]
) -> None:
    rolling = RollingMedian(size)
    window: deque[float] = deque(maxlen=size)
    for value in values:
        rolling.append(value)
        window.append(value)
        assert len(rolling) == len(window)
        assert rolling.median() == statistics.median(window)
