"""The three sinks against real servers: SQLite on disk, PostgreSQL, DynamoDB (moto)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fleetsync.errors import SinkError
from fleetsync.sinks.base import DeadLetter, Record, Sink
from fleetsync.sinks.dynamodb import DynamoDBSink
from fleetsync.sinks.postgres import PostgresSink
from fleetsync.sinks.sqlite import SqliteSink

pytestmark = pytest.mark.integration
_tables = itertools.count()


def record(
    key: str, value: float, *, at: str = "2026-01-01T00:00:00Z", order: Any = None
) -> Record:
    return Record(
        key=key,
        attributes={"power": value, "updated_at": at},
        item={"id": key},
        content_hash=f"h{value}",
        synced_at=1000.0,
        order_value=order,
        monotonic_value=at,
    )


@pytest.fixture(params=["sqlite", "postgres", "dynamodb"])
async def make_sink(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    opened: list[Sink] = []

    async def make(monotonic: str | None = None) -> Sink:
        table = f"plants_{next(_tables)}"
        sink: Sink
        if request.param == "sqlite":
            sink = SqliteSink(str(tmp_path / "s.db"), table, monotonic_attribute=monotonic)
        elif request.param == "postgres":
            dsn = request.getfixturevalue("postgres_dsn")
            sink = PostgresSink(dsn, table, monotonic_attribute=monotonic)
        else:
            url = request.getfixturevalue("dynamodb_endpoint")
            sink = DynamoDBSink(
                f"plants-{table}", key_template={"PK": "PLANT#{id}"}, endpoint_url=url,
                credentials=("test", "test"), create_table=True, monotonic_attribute=monotonic,
                ttl_attribute="expiresAt", ttl_days=90,
            )  # fmt: skip
        await sink.open()
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        await sink.close()


async def test_upsert_and_read_state(make_sink: Any) -> None:
    sink = await make_sink()
    result = await sink.write_batch([record("p-1", 1.5), record("p-2", 2.5)])
    assert sorted(result.written) == ["p-1", "p-2"] and not result.failed
    state = await sink.read_state(["p-1", "p-2", "p-3"])
    assert set(state) == {"p-1", "p-2"}
    assert state["p-1"].content_hash == "h1.5" and state["p-1"].synced_at == 1000.0
    again = await sink.write_batch([record("p-1", 9.0)])
    assert again.written == ["p-1"]
    assert (await sink.read_state(["p-1"]))["p-1"].content_hash == "h9.0"


async def test_a_batch_with_one_key_twice_is_merged_last_by_order(make_sink: Any) -> None:
    sink = await make_sink()
    batch = [record("u-1", 3.0, order=3), record("u-1", 1.0, order=1), record("u-2", 5.0)]
    result = await sink.write_batch(batch)
    assert not result.failed, result.failed
    assert (await sink.read_state(["u-1"]))["u-1"].content_hash == "h3.0"  # order 3 wins


async def test_monotonic_never_writes_older_data(make_sink: Any) -> None:
    sink = await make_sink(monotonic="updated_at")
    await sink.write_batch([record("p-1", 1.0, at="2026-01-02T00:00:00Z")])
    older = await sink.write_batch([record("p-1", 2.0, at="2026-01-01T00:00:00Z")])
    assert older.stale == ["p-1"] and not older.written
    assert (await sink.read_state(["p-1"]))["p-1"].content_hash == "h1.0"
    newer = await sink.write_batch([record("p-1", 3.0, at="2026-01-03T00:00:00Z")])
    assert newer.written == ["p-1"]
    assert sink.cost.write_units > 0


async def test_dead_letters_round_trip(make_sink: Any) -> None:
    sink = await make_sink()
    letters = [
        DeadLetter(f"p-{i}", "malformed payload", 3, {"id": f"p-{i}"}, 5.0) for i in range(3)
    ]
    await sink.write_dead_letters("run-a", letters)
    await sink.write_dead_letters("run-b", letters[:1])
    read = await sink.read_dead_letters("run-a")
    assert [(d.key, d.reason, d.attempts) for d in read] == [
        (f"p-{i}", "malformed payload", 3) for i in range(3)
    ]
    await sink.clear_dead_letters("run-a", ["p-0"])
    assert [d.key for d in await sink.read_dead_letters("run-a")] == ["p-1", "p-2"]
    assert [d.key for d in await sink.read_dead_letters("run-b")] == ["p-0"]


async def test_dynamodb_retries_unprocessed_items_and_throttles_until_written(
    dynamodb_faults: Any,
) -> None:
    sink = DynamoDBSink(
        "plants-faults", key_template={"PK": "PLANT#{id}"}, endpoint_url=dynamodb_faults.url,
        credentials=("test", "test"), create_table=True, sleep=lambda _: None,
    )  # fmt: skip
    await sink.open()
    try:
        dynamodb_faults.unprocessed_rate = 0.5
        dynamodb_faults.throttle_rate = 0.2
        written: list[str] = []
        for start in range(0, 100, 25):
            result = await sink.write_batch([record(f"p-{i}", i) for i in range(start, start + 25)])
            assert not result.failed, result.failed
            written += result.written
        assert sorted(written) == sorted(f"p-{i}" for i in range(100))
        assert dynamodb_faults.injected["unprocessed"] > 0
        assert dynamodb_faults.injected["throttled"] > 0
        assert sink.cost.unprocessed_items == dynamodb_faults.injected["unprocessed"]
        assert len(await sink.read_state([f"p-{i}" for i in range(100)])) == 100
        # 100 items in batches of 25: 4 calls plus one per retry.
        retries = sink.cost.throttles + (1 if dynamodb_faults.injected["unprocessed"] else 0)
        assert sink.cost.calls >= 4 + retries
    finally:
        await sink.close()


async def test_postgres_composite_conflict_key(postgres_dsn: str) -> None:
    sink = PostgresSink(postgres_dsn, "plans", conflict_key=["external_id", "tdsp_duns"])
    await sink.open()
    try:

        def plan(key: str, external: str, tdsp: str, rate: float) -> Record:
            return Record(key, {"external_id": external, "tdsp_duns": tdsp, "rate": rate},
                          {"id": key}, f"h{rate}", 1.0)  # fmt: skip

        await sink.write_batch([plan("c-1", "e-1", "t-1", 10.0), plan("c-2", "e-1", "t-2", 11.0)])
        await sink.write_batch([plan("c-1", "e-1", "t-1", 12.0)])
        state = await sink.read_state(["c-1", "c-2"])
        assert state["c-1"].content_hash == "h12.0" and state["c-2"].content_hash == "h11.0"
    finally:
        await sink.close()


async def test_an_unreachable_postgres_fails_without_printing_the_password(
    postgres_dsn: str,
) -> None:
    bad = "postgresql://fleetsync:s3cr3t-canary@127.0.0.1:9/postgres"
    sink = PostgresSink(bad, "plans")
    with pytest.raises(SinkError) as error:
        await sink.open()
    assert "s3cr3t-canary" not in str(error.value)
