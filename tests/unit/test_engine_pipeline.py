"""The engine's stages one at a time: typed fetch outcomes, the pure report, the gate held
by one task, the budgets' fallback share."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from conftest import MemorySink

from fleetsync.api.v1alpha1 import SyncJobSpec
from fleetsync.coordination.protocol import NoCoordinator
from fleetsync.sinks.base import SinkCost
from fleetsync.worker.attempts import FREE_THROTTLES, Attempts, Deferred, Fetched, FetchFailed
from fleetsync.worker.concurrency import ConcurrencyGate
from fleetsync.worker.dispatch import Dispatcher
from fleetsync.worker.engine import ShardEngine
from fleetsync.worker.fetch import AllowedHosts, Fetcher
from fleetsync.worker.main import allowed_hosts
from fleetsync.worker.mapping import Mapper
from fleetsync.worker.outcome import Pending
from fleetsync.worker.plan import ShardPlan
from fleetsync.worker.reporting import ShardProgress, shard_report
from fleetsync.worker.requests import RequestBuilder
from fleetsync.worker.retry import RetryPolicy
from fleetsync.worker.secrets import SecretResolver
from fleetsync.worker.vendors import VendorRuntime

PLAN = ShardPlan(run="r1", shard=2, shards=4, pod="p-2", base_dir=Path("."))


def spec(max_attempts: int = 3) -> SyncJobSpec:
    return SyncJobSpec.model_validate(
        {
            "fleet": {"inventory": {"generate": {"count": 1, "idTemplate": "p-{i}"}}},
            "source": {
                "http": {"url": "http://vendor.test/plants/{id}"},
                "retry": {
                    "maxAttempts": max_attempts,
                    "backoff": {"baseSeconds": 0.001, "maxSeconds": 0.002},
                },
                "mapping": {"power": "$.data.power"},
            },
        }
    )


async def fetch_one(
    answers: list[httpx.Response], max_attempts: int = 3
) -> tuple[Fetched | FetchFailed | Deferred, int]:
    job = spec(max_attempts)
    served = iter(answers)
    fetcher = Fetcher(
        allowed=allowed_hosts(job),
        timeout_seconds=1,
        max_connections=2,
        transport=httpx.MockTransport(lambda _request: next(served)),
    )
    attempts = Attempts(
        fetcher=fetcher,
        requests=RequestBuilder(job.source, secrets=SecretResolver(None, {}), fetcher=fetcher),
        mapper=Mapper(job.source.mapping),
        retry=RetryPolicy.from_spec(job.source.retry),
        rng=random.Random(1),
    )
    try:
        outcome = await attempts.fetch(
            VendorRuntime("default", job.source, limiter=None), {"id": "p-1"}
        )
    finally:
        await fetcher.aclose()
    return outcome, attempts.vendor_calls


async def test_a_success_after_retries_carries_its_attempt_count() -> None:
    ok = httpx.Response(200, json={"data": {"power": 2.5}})
    outcome, calls = await fetch_one([httpx.Response(503), httpx.Response(429), ok])
    assert outcome == Fetched({"power": 2.5}, attempts=3)
    assert calls == 3


@pytest.mark.parametrize(
    ("answers", "cause", "attempts", "text"),
    [
        ([httpx.Response(503)] * 3, "vendor", 3, "HTTP 503"),
        ([httpx.Response(200, content=b"{nope")], "payload", 1, "invalid JSON"),
        ([httpx.Response(404)], "payload", 1, "HTTP 404"),
        ([httpx.Response(503), httpx.Response(200, json={"x": 1})], "payload", 2, "matched"),
    ],
)
async def test_failures_are_typed_with_cause_and_attempts(
    answers: list[httpx.Response], cause: str, attempts: int, text: str
) -> None:
    outcome, _ = await fetch_one(answers, max_attempts=len(answers))
    assert isinstance(outcome, FetchFailed)
    assert (outcome.cause, outcome.attempts) == (cause, attempts)
    assert text in outcome.reason


async def test_429s_do_not_use_up_an_items_attempts_until_the_free_ones_are_spent() -> None:
    # A vendor pacing the fleet (a limit that just fell, a learned rate settling) is not the
    # item failing: maxAttempts 1 still lets it through after FREE_THROTTLES 429s.
    ok = httpx.Response(200, json={"data": {"power": 2.5}})
    outcome, calls = await fetch_one([httpx.Response(429)] * FREE_THROTTLES + [ok], max_attempts=1)
    assert outcome == Fetched({"power": 2.5}, attempts=FREE_THROTTLES + 1)
    assert calls == FREE_THROTTLES + 1


async def test_a_vendor_that_keeps_throttling_fails_the_item_with_its_real_call_count() -> None:
    answers = [httpx.Response(429)] * (FREE_THROTTLES + 2)
    outcome, calls = await fetch_one(answers, max_attempts=2)
    assert isinstance(outcome, FetchFailed)
    assert (outcome.cause, outcome.attempts, calls) == ("throttled", len(answers), len(answers))
    assert "429" in outcome.reason


async def test_a_bug_fails_the_item_instead_of_escaping() -> None:
    def boom(_request: httpx.Request) -> httpx.Response:
        raise ZeroDivisionError

    job = spec()
    fetcher = Fetcher(
        allowed=allowed_hosts(job), timeout_seconds=1, max_connections=2,
        transport=httpx.MockTransport(boom),
    )  # fmt: skip
    attempts = Attempts(
        fetcher=fetcher,
        requests=RequestBuilder(job.source, secrets=SecretResolver(None, {}), fetcher=fetcher),
        mapper=Mapper(job.source.mapping),
        retry=RetryPolicy.from_spec(job.source.retry),
        rng=random.Random(1),
    )
    outcome = await attempts.fetch(VendorRuntime("default", job.source, limiter=None), {"id": "a"})
    await fetcher.aclose()
    assert outcome == FetchFailed("internal error: ZeroDivisionError", 1, "internal")


def test_shard_report_is_a_pure_function_of_its_inputs() -> None:
    progress = ShardProgress(
        seen=7,
        shard_total=None,
        checkpoint={"watermark": 3, "above": "", "counts": {"synced": 4}},
        vendor_calls=9,
        error="books",
    )
    first = shard_report(PLAN, seq=5, state="running", progress=progress, cost=SinkCost(calls=2))
    again = shard_report(PLAN, seq=5, state="running", progress=progress, cost=SinkCost(calls=2))
    assert first == again
    assert (first["run"], first["shard"], first["pod"], first["seq"]) == ("r1", 2, "p-2", 5)
    assert first["cost"]["vendorCalls"] == 9 and first["cost"]["sinkCalls"] == 2
    assert first["error"] == "books" and first["checkpoint"] == progress.checkpoint


def test_a_starting_report_carries_no_checkpoint() -> None:
    hello = shard_report(
        PLAN, seq=1, state="starting", progress=ShardProgress(0, None, checkpoint=None)
    )
    assert hello["checkpoint"] is None and "error" not in hello


def plain_dispatcher(
    fetch: Callable[[VendorRuntime, Pending, Deferred], Awaitable[Fetched]],
    then: Callable[[Pending, object], Awaitable[None]],
    *,
    on_crash: Callable[[Pending, BaseException], None] = lambda pending, error: pytest.fail(
        f"crashed: {error!r}"
    ),
    before_fetch: Callable[[Pending], Awaitable[None]] | None = None,
) -> Dispatcher:
    """A dispatcher over one vendor with no rate limit, where nothing may be skipped."""
    return Dispatcher(
        spec().source,
        limiter_for=lambda key, rate: pytest.fail("no rate limit configured"),
        fetch=fetch,
        then=then,
        before_fetch=before_fetch,
        on_skip=lambda pending: pytest.fail("nothing is skipped"),
        on_crash=on_crash,
        stopping=asyncio.Event(),
    )


def dispatch_items(dispatcher: Dispatcher, count: int) -> None:
    for i in range(count):
        dispatcher.dispatch(Pending(index=i, key=f"p-{i}", item={"id": f"p-{i}"}))


class RecordingGate(ConcurrencyGate):
    def __init__(self, gate: ConcurrencyGate) -> None:
        super().__init__(gate._controller)
        self.entered = 0
        self.left = 0

    async def acquire(self) -> None:
        await super().acquire()
        self.entered += 1

    def release(self) -> None:
        self.left += 1
        super().release()


async def test_each_item_passes_the_gate_once_and_leaves_it_empty() -> None:
    # The dispatch loop enters the gate for an item's first try and starts its task holding
    # the slot; the task leaves it when the fetch ends, whatever way it ends.
    done: list[tuple[int, object]] = []
    peak = 0

    async def fetch(vendor: VendorRuntime, pending: Pending, resume: Deferred) -> Fetched:
        nonlocal peak
        peak = max(peak, vendor.gate.in_flight)
        await asyncio.sleep(0.001)
        return Fetched({"n": pending.index}, 1)

    async def then(pending: Pending, outcome: object) -> None:
        done.append((pending.index, outcome))

    dispatcher = plain_dispatcher(fetch, then)
    vendor = dispatcher.vendor_of({"id": "p-0"})
    gate = vendor.gate = RecordingGate(vendor.gate)
    dispatch_items(dispatcher, 40)
    await dispatcher.drain()
    assert sorted(i for i, _ in done) == list(range(40))
    assert gate.entered == gate.left == 40  # once per item
    assert gate.in_flight == 0 and vendor.pending == 0
    assert 1 <= peak <= vendor.concurrency.limit


async def test_a_vendor_is_sent_one_request_per_turn_of_the_loop_not_a_burst() -> None:
    # The gate has room for 16 at once; the vendor must still not get 16 requests in one
    # instant (vendors with a token bucket answer a burst with 429s): first tries go out
    # one per turn of the event loop, with responses read in between.
    turn = 0
    sent_at_turn: list[int] = []

    async def ticker() -> None:
        nonlocal turn
        while True:
            turn += 1
            await asyncio.sleep(0)

    async def fetch(vendor: VendorRuntime, pending: Pending, resume: Deferred) -> Fetched:
        sent_at_turn.append(turn)
        await asyncio.sleep(0.01)
        return Fetched({}, 1)

    async def then(pending: Pending, outcome: object) -> None:
        pass

    ticking = asyncio.create_task(ticker())
    try:
        dispatcher = plain_dispatcher(fetch, then)
        assert dispatcher.vendor_of({"id": "p-0"}).concurrency.limit >= 16
        dispatch_items(dispatcher, 16)
        await asyncio.wait_for(dispatcher.drain(), 5)
    finally:
        ticking.cancel()
    assert len(sent_at_turn) == 16
    assert len(set(sent_at_turn)) == 16, sent_at_turn  # never two in one turn


async def test_an_item_task_that_raises_is_collected_and_reported() -> None:
    crashed: list[tuple[int, str]] = []

    async def fetch(vendor: VendorRuntime, pending: Pending, resume: Deferred) -> Fetched:
        return Fetched({}, 1)

    async def then(pending: Pending, outcome: object) -> None:
        if pending.index == 3:
            raise RuntimeError("after the fetch")

    dispatcher = plain_dispatcher(
        fetch, then, on_crash=lambda pending, error: crashed.append((pending.index, repr(error)))
    )
    dispatch_items(dispatcher, 5)
    await dispatcher.drain()
    assert crashed == [(3, "RuntimeError('after the fetch')")]


async def test_a_failure_letting_an_item_in_fails_that_item_and_the_vendor_goes_on() -> None:
    # The dispatch loop itself enters the re-fetch window and the gate for a first try: a bug
    # there must end that item (on_crash), not the vendor's loop with its queue behind it.
    crashed: list[tuple[int, str]] = []
    fetched: list[int] = []

    async def before_fetch(pending: Pending) -> None:
        if pending.index == 2:
            raise RuntimeError("window")

    async def fetch(vendor: VendorRuntime, pending: Pending, resume: Deferred) -> Fetched:
        fetched.append(pending.index)
        return Fetched({}, 1)

    async def then(pending: Pending, outcome: object) -> None:
        pass

    dispatcher = plain_dispatcher(
        fetch,
        then,
        on_crash=lambda pending, error: crashed.append((pending.index, repr(error))),
        before_fetch=before_fetch,
    )
    dispatch_items(dispatcher, 5)
    await asyncio.wait_for(dispatcher.drain(), 5)
    vendor = dispatcher.vendor_of({"id": "p-0"})
    assert crashed == [(2, "RuntimeError('window')")]
    assert sorted(fetched) == [0, 1, 3, 4]
    assert vendor.gate.in_flight == 0 and vendor.pending == 0 and vendor.fetching == 0


async def test_a_run_naming_more_vendors_than_the_bound_fails_naming_vendors_by(
    tmp_path: Path,
) -> None:
    from fleetsync.errors import ManifestError
    from fleetsync.worker.vendors import MAX_VENDORS

    count = MAX_VENDORS + 5
    spec = SyncJobSpec.model_validate({
        "fleet": {"inventory": {"generate": {
            "count": count, "idTemplate": "p-{i}", "template": {"vendor": "v{i}"}}}},
        "source": {"http": {"url": "http://127.0.0.1:9/{id}"}, "vendors": {"by": "vendor"}},
        "sink": {"sqlite": {"path": "x.db", "table": "t"}},
    })  # fmt: skip
    sink = MemorySink()
    fetcher = Fetcher(allowed=AllowedHosts(["127.0.0.1"]), timeout_seconds=1, max_connections=4)
    engine = ShardEngine(
        spec,
        ShardPlan(run="r1", shard=0, shards=4, pod="p", base_dir=tmp_path),
        sink=sink,
        fetcher=fetcher,
        requests=RequestBuilder(spec.source, secrets=SecretResolver(None), fetcher=fetcher),
        coordinator=NoCoordinator(),
    )
    try:
        with pytest.raises(ManifestError, match=r"spec\.source\.vendors\.by"):
            await engine.run()
    finally:
        await fetcher.aclose()
