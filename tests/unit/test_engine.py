"""The shard engine's logic against an in-memory sink and httpx's mock transport.

These check outcomes and bookkeeping, not I/O: tests/integration runs the same engine
against the real simulator and real databases.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import MemorySink

from fleetsync.api.v1alpha1 import SyncJobSpec
from fleetsync.coordination.protocol import NoCoordinator
from fleetsync.worker.engine import ShardEngine, ShardPlan
from fleetsync.worker.fetch import Fetcher
from fleetsync.worker.main import allowed_hosts
from fleetsync.worker.requests import RequestBuilder
from fleetsync.worker.secrets import SecretResolver


def make_spec(count: int = 60, **write: object) -> SyncJobSpec:
    return SyncJobSpec.model_validate(
        {
            "fleet": {"inventory": {"generate": {"count": count, "idTemplate": "p-{i}"}}},
            "source": {
                "http": {"url": "http://vendor.test/plants/{id}"},
                "retry": {"maxAttempts": 3, "backoff": {"baseSeconds": 0.001, "maxSeconds": 0.01}},
                "mapping": {"power": "$.data.power", "at": "$.data.at"},
            },
            "write": write,
        }
    )


class Vendor:
    """p-7, p-27…: malformed body. p-9, p-29…: 503 once, then fine. p-13, p-33…: always 503."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        item = request.url.path.rsplit("/", 1)[1]
        n = int(item.split("-")[1])
        self.calls[item] = self.calls.get(item, 0) + 1
        if n % 20 == 7:
            return httpx.Response(200, content=b"{broken")
        if (n % 20 == 9 and self.calls[item] == 1) or n % 20 == 13:
            return httpx.Response(503)
        return httpx.Response(200, json={"data": {"power": n * 1.5, "at": 100 + n}})


def failing(count: int) -> set[str]:
    return {f"p-{n}" for n in range(count) if n % 20 in (7, 13)}


async def run_engine(
    spec: SyncJobSpec,
    sink: MemorySink,
    resume: object = None,
    handler: Callable[[httpx.Request], httpx.Response] | None = None,
) -> ShardEngine:
    fetcher = Fetcher(
        allowed=allowed_hosts(spec),
        timeout_seconds=1,
        max_connections=10,
        transport=httpx.MockTransport(handler or Vendor()),
    )
    plan = ShardPlan(run="r1", shard=0, shards=1, pod="p", base_dir=Path("."))
    engine = ShardEngine(
        spec,
        plan,
        sink=sink,  # type: ignore[arg-type]
        fetcher=fetcher,
        requests=RequestBuilder(spec.source, secrets=SecretResolver(None, {}), fetcher=fetcher),
        coordinator=NoCoordinator(),
        resume=resume,  # type: ignore[arg-type]
    )
    await engine.run()
    await fetcher.aclose()
    return engine


async def test_every_item_ends_in_exactly_one_outcome() -> None:
    sink = MemorySink()
    engine = await run_engine(make_spec(60), sink)
    counts = engine.tracker.counts
    assert counts["failed"] == len(failing(60)) == 6
    assert counts["synced"] == 60 - 6
    assert set(sink.rows) == {f"p-{n}" for n in range(60)} - failing(60)
    assert {k for (_, k) in sink.letters} == failing(60)
    letter = sink.letters[("r1", "p-7")]
    assert "invalid JSON" in letter.reason and letter.attempts == 1
    assert sink.rows["p-10"].attributes == {"power": 15.0, "at": 110}
    assert engine.tracker.watermark == 59


async def test_transient_errors_are_retried_then_dead_lettered() -> None:
    sink = MemorySink()
    vendor = Vendor()
    await run_engine(make_spec(20), sink, handler=vendor)
    assert "p-9" in sink.rows and vendor.calls["p-9"] == 2
    letter = sink.letters[("r1", "p-13")]
    assert letter.attempts == 3 and "HTTP 503" in letter.reason
    assert vendor.calls["p-13"] == 3


async def test_unchanged_items_cost_no_write_on_the_second_run() -> None:
    sink = MemorySink()
    await run_engine(make_spec(40), sink)
    writes = len(sink.batches)
    engine = await run_engine(make_spec(40), sink)
    assert engine.tracker.counts["unchanged"] == 40 - len(failing(40))
    assert len(sink.batches) == writes  # no new batch at all


async def test_fresh_items_are_not_fetched() -> None:
    sink = MemorySink()
    await run_engine(make_spec(40), sink)
    vendor = Vendor()
    engine = await run_engine(make_spec(40, freshFor="30m"), sink, handler=vendor)
    assert engine.tracker.counts["fresh"] == 40 - len(failing(40))
    assert set(vendor.calls) == failing(40)


async def test_monotonic_guard_counts_stale() -> None:
    sink = MemorySink(monotonic=True)
    await run_engine(make_spec(20, monotonicOn="at", skipUnchanged=False), sink)

    def older(request: httpx.Request) -> httpx.Response:
        n = int(request.url.path.rsplit("-", 1)[1])
        return httpx.Response(200, json={"data": {"power": 0.0, "at": n}})

    engine = await run_engine(
        make_spec(20, monotonicOn="at", skipUnchanged=False), sink, handler=older
    )
    assert engine.tracker.counts["stale"] == 20 - len(failing(20))
    assert sink.rows["p-3"].attributes["power"] == 4.5


async def test_resume_skips_final_items_and_keeps_counts() -> None:
    sink = MemorySink()
    first = await run_engine(make_spec(30), sink)
    snapshot = json.loads(json.dumps(first.tracker.snapshot()))
    vendor = Vendor()
    second = await run_engine(make_spec(30), sink, resume=snapshot, handler=vendor)
    assert vendor.calls == {}
    assert second.tracker.counts == first.tracker.counts


async def test_sink_refusals_dead_letter_the_item() -> None:
    sink = MemorySink(fail_keys=["p-3"])
    engine = await run_engine(make_spec(10), sink)
    assert sink.letters[("r1", "p-3")].reason == "sink: refused"
    assert engine.tracker.counts["failed"] == 1 + len(failing(10))


async def test_host_outside_allowed_hosts_fails_the_item_without_a_request() -> None:
    spec = SyncJobSpec.model_validate(
        {
            "fleet": {"inventory": {"inline": [{"id": "a", "host": "evil.test"}]}},
            "source": {
                "http": {"url": "http://{host}/x/{id}", "allowedHosts": ["vendor.test"]},
                "mapping": {"power": "$.data.power"},
            },
        }
    )
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"data": {"power": 1}})

    sink = MemorySink()
    await run_engine(spec, sink, handler=record)
    assert sent == []
    assert "evil.test is not in allowedHosts" in sink.letters[("r1", "a")].reason


@pytest.mark.parametrize("count", [0, 1])
async def test_tiny_fleets_finish(count: int) -> None:
    engine = await run_engine(make_spec(count), MemorySink())
    assert sum(engine.tracker.counts.values()) == count
