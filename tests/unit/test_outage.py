"""Outages are ridden out: an open breaker defers items, and a give-up carries the real cause.

Fake time throughout: the breaker's clock only moves when a waiter sleeps, so a 5 s outage
and a 300 s ``maxOutageSeconds`` take milliseconds, and the vendor (an httpx MockTransport)
is down or up by that same clock.
"""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from fleetsync.api.constants import BreakerState
from fleetsync.api.v1alpha1 import SyncJobSpec
from fleetsync.api.v1alpha1.syncjob import CircuitBreaker as BreakerSpec
from fleetsync.worker.attempts import Attempts, Deferred, Fetched, FetchFailed, FetchOutcome
from fleetsync.worker.breaker import CircuitBreaker
from fleetsync.worker.dispatch import Dispatcher
from fleetsync.worker.fetch import Fetcher
from fleetsync.worker.main import allowed_hosts
from fleetsync.worker.mapping import Mapper
from fleetsync.worker.outcome import Pending
from fleetsync.worker.requests import RequestBuilder
from fleetsync.worker.retry import RetryPolicy
from fleetsync.worker.secrets import SecretResolver
from fleetsync.worker.vendors import VendorRuntime


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        await asyncio.sleep(0)


def breaker_spec(**kw: float) -> BreakerSpec:
    base = {"failureRateThreshold": 50, "minimumCalls": 4, "windowSeconds": 30,
            "openSeconds": 10, "halfOpenCalls": 2, "maxOutageSeconds": 60}  # fmt: skip
    return BreakerSpec.model_validate(base | kw)


def test_the_default_max_outage_is_documented_and_longer_than_open_seconds() -> None:
    spec = BreakerSpec()
    assert spec.max_outage_seconds == 300 > spec.open_seconds
    description = BreakerSpec.model_fields["max_outage_seconds"].description or ""
    assert "300 s" in description and "schedule" in description


async def test_an_open_breaker_waits_until_half_open_lets_a_call_through() -> None:
    time = FakeTime()
    breaker = CircuitBreaker(breaker_spec(), clock=time, sleep=time.sleep)
    for _ in range(4):
        breaker.record(False)
    assert breaker.state is BreakerState.OPEN and not breaker.ready()
    assert await breaker.wait_ready()
    assert breaker.state is BreakerState.HALF_OPEN
    assert 9.99 <= time.slept < 10.5  # waited openSeconds, not maxOutageSeconds
    assert breaker.allow() and breaker.allow() and not breaker.ready()  # two trials out
    breaker.record(True)
    breaker.record(True)
    assert breaker.state is BreakerState.CLOSED and breaker.outage_seconds() == 0


async def test_failing_probes_keep_the_outage_running_until_max_outage_seconds() -> None:
    time = FakeTime()
    breaker = CircuitBreaker(breaker_spec(maxOutageSeconds=25), clock=time, sleep=time.sleep)
    for _ in range(4):
        breaker.record(False)
    while await breaker.wait_ready():
        assert breaker.allow()
        breaker.record(False)  # the probe fails: Open again, the outage goes on
    assert breaker.outage_exceeded() and 24.99 <= time.slept < 25.5
    stop = asyncio.Event()
    stop.set()
    healthy = CircuitBreaker(breaker_spec(), clock=time, sleep=time.sleep)
    healthy.force(BreakerState.OPEN)
    assert not await healthy.wait_ready(stop)  # a stopping shard does not wait


def job(max_attempts: int = 3, **breaker: float) -> SyncJobSpec:
    return SyncJobSpec.model_validate(
        {
            "fleet": {"inventory": {"generate": {"count": 1, "idTemplate": "p-{i}"}}},
            "source": {
                "http": {"url": "http://vendor.test/plants/{id}"},
                "retry": {
                    "maxAttempts": max_attempts,
                    "backoff": {"baseSeconds": 0.001, "maxSeconds": 0.002},
                },
                "circuitBreaker": {
                    "minimumCalls": 4, "openSeconds": 10, "halfOpenCalls": 2, **breaker
                },
                "mapping": {"power": "$.data.power"},
            },
        }
    )  # fmt: skip


def attempts_for(spec: SyncJobSpec, answer: httpx.MockTransport) -> tuple[Fetcher, Attempts]:
    """The real attempts of ``spec``'s source against a vendor that answers ``answer``."""
    fetcher = Fetcher(
        allowed=allowed_hosts(spec), timeout_seconds=1, max_connections=8, transport=answer
    )
    attempts = Attempts(
        fetcher=fetcher,
        requests=RequestBuilder(spec.source, secrets=SecretResolver(None, {}), fetcher=fetcher),
        mapper=Mapper(spec.source.mapping),
        retry=RetryPolicy.from_spec(spec.source.retry),
        rng=random.Random(1),
    )
    return fetcher, attempts


async def run_items(
    spec: SyncJobSpec, time: FakeTime, answer: httpx.MockTransport, count: int = 30
) -> tuple[dict[int, FetchOutcome], VendorRuntime, int, Attempts]:
    """Dispatch ``count`` items through the real attempts; the most items seen waiting."""
    fetcher, attempts = attempts_for(spec, answer)
    outcomes: dict[int, FetchOutcome] = {}
    most_waiting = 0

    async def fetch(vendor: VendorRuntime, pending: Pending, resume: Deferred) -> object:
        return await attempts.fetch(vendor, pending.item, resume=resume)

    async def then(pending: Pending, outcome: FetchOutcome) -> None:
        outcomes[pending.index] = outcome

    dispatcher = Dispatcher(
        spec.source,
        limiter_for=lambda key, rate: pytest.fail("no rate limit configured"),
        fetch=fetch,  # type: ignore[arg-type]
        then=then,
        on_skip=lambda pending: pytest.fail("nothing is skipped"),
        on_crash=lambda pending, error: pytest.fail(f"crashed: {error!r}"),
        stopping=asyncio.Event(),
    )
    vendor = dispatcher.vendor_of({"id": "p-0"})

    async def sleep(seconds: float) -> None:
        nonlocal most_waiting
        most_waiting = max(most_waiting, vendor.waiting)
        await time.sleep(seconds)

    vendor.breaker = CircuitBreaker(spec.source.circuit_breaker, clock=time, sleep=sleep)
    try:
        for i in range(count):
            dispatcher.dispatch(Pending(index=i, key=f"p-{i}", item={"id": f"p-{i}"}))
        await dispatcher.drain()
    finally:
        await fetcher.aclose()
    return outcomes, vendor, most_waiting, attempts


def down_until(time: FakeTime, until: float) -> httpx.MockTransport:
    def answer(_request: httpx.Request) -> httpx.Response:
        if time.now < until:
            return httpx.Response(503, text="maintenance")
        return httpx.Response(200, json={"data": {"power": 1.5}})

    return httpx.MockTransport(answer)


async def test_items_wait_out_an_outage_and_all_succeed_after_half_open() -> None:
    time = FakeTime()
    outcomes, vendor, most_waiting, attempts = await run_items(
        job(), time, down_until(time, 1005.0)
    )
    assert sorted(outcomes) == list(range(30))
    assert all(isinstance(o, Fetched) for o in outcomes.values()), outcomes
    assert time.slept >= 9.99  # they waited openSeconds rather than failing at once
    assert most_waiting >= 14  # the queued and the deferred items, none of them failed
    assert vendor.breaker.state is BreakerState.CLOSED and vendor.waiting == 0
    assert any(isinstance(o, Fetched) and o.attempts >= 2 for o in outcomes.values())
    assert attempts.vendor_calls < 30 * 3


async def test_past_max_outage_every_item_fails_with_the_real_cause_and_its_attempts() -> None:
    time = FakeTime()
    outcomes, vendor, _, attempts = await run_items(
        job(maxOutageSeconds=25), time, down_until(time, float("inf"))
    )
    assert sorted(outcomes) == list(range(30))
    failed = [o for o in outcomes.values() if isinstance(o, FetchFailed)]
    assert len(failed) == 30
    for outcome in failed:
        assert "HTTP 503" in outcome.reason, outcome
        assert "breaker open" not in outcome.reason
    assert sum(o.attempts for o in failed) == attempts.vendor_calls  # real tries, counted
    assert any(o.attempts == 0 for o in failed)  # never tried: the vendor's last cause
    assert any(o.attempts >= 1 for o in failed)
    assert all("maxOutageSeconds 25s" in o.reason for o in failed if o.cause == "breaker")
    assert 24.99 <= time.slept < 40
    assert vendor.last_failure == "default: HTTP 503: maintenance"


async def test_a_trial_that_says_nothing_about_the_vendor_gives_its_slot_back() -> None:
    time = FakeTime()
    breaker = CircuitBreaker(breaker_spec(), clock=time, sleep=time.sleep)
    for _ in range(4):
        breaker.record(False)
    assert await breaker.wait_ready()
    assert breaker.allow() and breaker.allow() and not breaker.ready()
    breaker.release()  # e.g. a 429 or a 4xx: no verdict on availability
    assert breaker.ready() and breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    breaker.record(True)
    breaker.record(True)
    assert breaker.state is BreakerState.CLOSED


def retrying_job(backoff: float = 0.02, **breaker: float) -> SyncJobSpec:
    """Two requests in flight at most, retries backing off ``backoff`` to twice that."""
    spec = job(**breaker).model_dump(by_alias=True, exclude_none=True)
    spec["source"]["retry"]["backoff"] = {"baseSeconds": backoff, "maxSeconds": 2 * backoff}
    spec["source"]["concurrency"] = {"mode": "fixed", "initial": 2, "min": 1, "max": 2}
    return SyncJobSpec.model_validate(spec)


async def test_an_item_backs_off_without_its_slot_so_the_breaker_opens_in_time() -> None:
    # The breaker judges after 10 calls. Had the two failing items kept their slots through
    # their backoffs, they would have made the calls alone, three each, and been
    # dead-lettered before it opened; without them, other items' first tries reach ten at
    # once, the breaker holds every retry, and the half-open probe finds the vendor back.
    time = FakeTime()
    outcomes, vendor, _, attempts = await run_items(
        retrying_job(minimumCalls=10), time, down_until(time, 1005.0)
    )
    assert sorted(outcomes) == list(range(30))
    assert all(isinstance(o, Fetched) for o in outcomes.values()), outcomes
    assert vendor.gate.in_flight == 0 and vendor.fetching == 0
    assert attempts.vendor_calls < 30 + 10 + 4  # the first tries, the ten, the probes


async def test_an_item_cancelled_in_its_backoff_leaves_the_gate_balanced() -> None:
    spec = retrying_job(backoff=5.0, minimumCalls=1000)
    down = httpx.MockTransport(lambda request: httpx.Response(503))
    fetcher, attempts = attempts_for(spec, down)
    vendor = VendorRuntime("default", spec.source, limiter=None)
    try:
        await vendor.gate.acquire()  # as the dispatcher does before an item's first try
        vendor.fetching += 1
        task = asyncio.create_task(attempts.fetch(vendor, {"id": "p-1"}))
        for _ in range(100):
            if vendor.gate.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert vendor.gate.in_flight == 0 and vendor.fetching == 0  # backing off, slot given
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert vendor.gate.in_flight == 1 and vendor.fetching == 1  # counted again at once
        vendor.fetching -= 1
        vendor.gate.release()  # the dispatcher's release, balanced
        assert vendor.gate.in_flight == 0
    finally:
        await fetcher.aclose()


async def test_an_item_resumed_after_the_breaker_keeps_its_free_429s() -> None:
    # Five 429s (free: they use up none of its two attempts), then the breaker opens on the
    # fleet's word and defers the item; resumed, a 503 leaves it one more try, which succeeds.
    # Resumed with its free 429s forgotten, that 503 was its sixth attempt of two: failed.
    spec = job(max_attempts=2)
    vendor = VendorRuntime("default", spec.source, limiter=None)
    answers = [429] * 5 + [503, 200]

    def answer(_request: httpx.Request) -> httpx.Response:
        status = answers.pop(0)
        if len(answers) == 2:  # the fifth 429 went out: other shards saw the vendor fail
            vendor.breaker.force(BreakerState.OPEN)
        if status == 200:
            return httpx.Response(200, json={"data": {"power": 1.5}})
        return httpx.Response(status)

    fetcher, attempts = attempts_for(spec, httpx.MockTransport(answer))
    try:
        deferred = await attempts.fetch(vendor, {"id": "p-1"})
        assert deferred == Deferred(5, "default: HTTP 429 Too Many Requests", 5)
        vendor.breaker.force(None)  # the fleet's verdict lifted
        outcome = await attempts.fetch(vendor, {"id": "p-1"}, resume=deferred)
    finally:
        await fetcher.aclose()
    assert isinstance(outcome, Fetched) and outcome.attempts == 7, outcome
