"""The sinks under the faults real stores produce (issue 12): a fault proxy in front of the
DynamoDB-protocol server (throttled reads and writes, UnprocessedItems/Keys, connection
resets, 5xx), a real PostgreSQL server stopped and restarted mid-run, and shards opening
the same tables at once. Each test checks what a user would see: every row present, the
bad record alone failed with its reason, and no exception but a SinkError once the retry
budget is spent."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from fleetsync.backoff import Backoff
from fleetsync.errors import ManifestError, SinkError
from fleetsync.sinks.base import DeadLetter, Record
from fleetsync.sinks.dynamodb import DynamoDBSink
from fleetsync.sinks.postgres import PostgresSink
from fleetsync.sinks.retry import SinkRetry
from fleetsync.sinks.sqlite import SqliteSink

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.dynamodb import FaultProxy
from support.postgres import PostgresServer, postgres_instance

pytestmark = pytest.mark.integration
_tables = itertools.count()
SCHEDULES = 12  # fault schedules drawn (fixed seed): each a mix of every DynamoDB fault
OLD_AND_NEW = [("o-1", "", "old"), ("o-1", "7", "new")]  # a letter from before members, one after
FAST = SinkRetry(Backoff(base=0.01, cap=0.05), attempts=4, seconds=30)


def record(key: str, value: Any) -> Record:
    return Record(key, {"power": value, "site": {"n": 1}}, {"id": key}, f"h{value}", 1000.0)


def dynamo(url: str, table: str, **kwargs: Any) -> DynamoDBSink:
    return DynamoDBSink(
        table, key_template={"PK": "PLANT#{id}"}, endpoint_url=url, credentials=("test", "test"),
        create_table=True, sleep=lambda _: None, **kwargs,
    )  # fmt: skip


# --- DynamoDB ---------------------------------------------------------------------------------


def _schedule(seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    return {
        "unprocessed_rate": rng.choice([0.0, 0.3, 0.5]),
        "throttle_rate": rng.choice([0.0, 0.2, 0.4]),
        "unprocessed_keys_rate": rng.choice([0.0, 0.3, 0.5]),
        "read_throttle_rate": rng.choice([0.0, 0.2, 0.4]),
        "reset_rate": rng.choice([0.0, 0.1, 0.2]),
        "server_error_rate": rng.choice([0.0, 0.1, 0.2]),
    }


@pytest.mark.parametrize("seed", range(SCHEDULES))
async def test_dynamodb_loses_nothing_under_a_fault_schedule(
    dynamodb_faults: FaultProxy, dynamodb_endpoint: str, seed: int
) -> None:
    table = f"faults-{seed}-{next(_tables)}"
    sink = dynamo(dynamodb_faults.url, table, retry=SinkRetry(attempts=40))
    await sink.open()
    try:
        for name, rate in _schedule(seed).items():
            setattr(dynamodb_faults, name, rate)
        dynamodb_faults.rng.seed(seed)
        keys = [f"p-{i}" for i in range(120)]
        written, failed = [], {}
        for start in range(0, len(keys), 25):
            batch = [record(k, i) for i, k in enumerate(keys[start : start + 25], start)]
            if start == 50:
                batch[3] = record(batch[3].key, float("nan"))
            result = await sink.write_batch(batch)
            written += result.written
            failed.update(result.failed)
        assert list(failed) == ["p-53"] and "'power' is NaN" in failed["p-53"]
        assert sorted(written) == sorted(k for k in keys if k != "p-53")
        state = await sink.read_state(keys)  # reads under the same faults
        assert set(state) == set(written)
        letters = [DeadLetter("p-53", failed["p-53"], 1, {"id": "p-53"}, 1.0, str(i))
                   for i in range(30)]  # fmt: skip
        await sink.write_dead_letters("run-f", letters)
        assert len(await sink.read_dead_letters("run-f")) == 30
    finally:
        await sink.close()
    # What is in the table, read past the proxy: every row once, nothing else.
    client = boto3.client("dynamodb", endpoint_url=dynamodb_endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")  # fmt: skip
    rows = client.get_paginator("scan").paginate(TableName=table).build_full_result()["Items"]
    client.close()
    records = sorted(r["_fs_key"]["S"] for r in rows if "dlq_run" not in r)
    assert records == sorted(written)
    assert sum(1 for r in rows if "dlq_run" in r) == 30
    assert sum(dynamodb_faults.injected.values()) > 0


async def test_dynamodb_read_throttling_and_unprocessed_keys_are_retried(
    dynamodb_faults: FaultProxy,
) -> None:
    sink = dynamo(dynamodb_faults.url, f"reads-{next(_tables)}")
    await sink.open()
    try:
        keys = [f"r-{i}" for i in range(150)]
        for start in range(0, 150, 25):
            await sink.write_batch([record(k, 1) for k in keys[start : start + 25]])
        dynamodb_faults.read_throttle_rate = 0.5
        dynamodb_faults.unprocessed_keys_rate = 0.5
        assert set(await sink.read_state(keys)) == set(keys)
        assert dynamodb_faults.injected["read_throttled"] > 0
        assert dynamodb_faults.injected["unprocessed_keys"] > 0
        assert sink.cost.throttles == dynamodb_faults.injected["read_throttled"]
    finally:
        await sink.close()


async def test_dynamodb_gives_up_with_a_sink_error_once_the_budget_is_spent(
    dynamodb_faults: FaultProxy,
) -> None:
    sink = dynamo(dynamodb_faults.url, f"budget-{next(_tables)}", retry=FAST)
    await sink.open()
    try:
        dynamodb_faults.throttle_rate = 1.0
        with pytest.raises(SinkError, match=r"write still failing after 4 attempts.*throttled"):
            await sink.write_batch([record("b-1", 1)])
        dynamodb_faults.calm()
        dynamodb_faults.read_throttle_rate = 1.0
        with pytest.raises(SinkError, match="read still failing after 4 attempts"):
            await sink.read_state(["b-1"])
        dynamodb_faults.calm()
        dynamodb_faults.reset_rate = 1.0
        with pytest.raises(SinkError, match="ConnectionClosedError"):
            await sink.write_dead_letters("run", [DeadLetter("b-1", "x", 1, {}, 1.0)])
        dynamodb_faults.calm()
        assert (await sink.write_batch([record("b-1", 1)])).written == ["b-1"]
    finally:
        await sink.close()


async def test_dynamodb_shards_creating_one_table_at_once_all_open(
    dynamodb_faults: FaultProxy,
) -> None:
    table = f"race-{next(_tables)}"
    sinks = [dynamo(dynamodb_faults.url, table) for _ in range(8)]
    try:
        await asyncio.gather(*(s.open() for s in sinks))
        assert dynamodb_faults.requests["CreateTable"] > 1  # they did race: losers waited
        results = await asyncio.gather(
            *(s.write_batch([record(f"s-{i}", i)]) for i, s in enumerate(sinks))
        )
        assert sorted(k for r in results for k in r.written) == sorted(f"s-{i}" for i in range(8))
    finally:
        for sink in sinks:
            await sink.close()


async def test_dynamodb_reads_dead_letters_written_before_members(dynamodb_endpoint: str) -> None:
    sink = dynamo(dynamodb_endpoint, f"old-letters-{next(_tables)}")
    await sink.open()
    try:
        old = {"PK": "DLQ#run-o#o-1", "dlq_run": "run-o", "_fs_key": "o-1", "reason": "old",
               "attempts": 2, "item": json.dumps({"id": "o-1"}), "failed_at": 3}  # fmt: skip
        boto3.resource("dynamodb", endpoint_url=dynamodb_endpoint, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test",
                       ).Table(sink.table).put_item(Item=old)  # fmt: skip
        await sink.write_dead_letters("run-o", [DeadLetter("o-1", "new", 1, {}, 4.0, "7")])
        read = await sink.read_dead_letters("run-o")
        assert [(d.key, d.member, d.reason) for d in read] == OLD_AND_NEW
        await sink.clear_dead_letters("run-o", ["o-1"])
        assert await sink.read_dead_letters("run-o") == []
    finally:
        await sink.close()


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def restartable_postgres() -> Iterator[PostgresServer]:
    with postgres_instance() as server:
        yield server


@pytest.fixture
async def pg_sink(restartable_postgres: PostgresServer) -> AsyncIterator[PostgresSink]:
    sink = PostgresSink(restartable_postgres.dsn, f"restart_{next(_tables)}")
    await sink.open()
    yield sink
    await sink.close()


async def _calls_beyond(sink: PostgresSink, calls: int) -> None:
    while sink.cost.calls <= calls:  # the write has met the stopped server at least once
        await asyncio.sleep(0.01)


async def test_postgres_write_waits_through_a_restart(
    restartable_postgres: PostgresServer, pg_sink: PostgresSink
) -> None:
    first = await pg_sink.write_batch([record(f"a-{i}", i) for i in range(50)])
    assert len(first.written) == 50
    await asyncio.to_thread(restartable_postgres.stop)
    calls = pg_sink.cost.calls
    batch = [record(f"a-{i}", i + 100) for i in range(25, 100)]
    batch[10] = record("a-35", float("inf"))
    writing = asyncio.create_task(pg_sink.write_batch(batch))
    await _calls_beyond(pg_sink, calls + 1)
    assert not writing.done()
    await asyncio.to_thread(restartable_postgres.start)
    result = await writing
    assert result.failed == {"a-35": result.failed["a-35"]} and "+Infinity" in result.failed["a-35"]
    assert len(result.written) == 74
    state = await pg_sink.read_state([f"a-{i}" for i in range(100)])
    assert len(state) == 100 and state["a-99"].content_hash == "h199"
    assert state["a-35"].content_hash == "h35"  # the refused value left the stored row alone


async def test_postgres_reconnects_after_a_restart_between_calls(
    restartable_postgres: PostgresServer, pg_sink: PostgresSink
) -> None:
    await pg_sink.write_batch([record("b-1", 1)])
    await asyncio.to_thread(restartable_postgres.restart)
    assert set(await pg_sink.read_state(["b-1"])) == {"b-1"}
    await asyncio.to_thread(restartable_postgres.restart)
    letters = [DeadLetter("b-2", "x", 1, {"id": "b-2"}, 1.0, str(i)) for i in range(3)]
    await pg_sink.write_dead_letters("run-r", letters)
    await asyncio.to_thread(restartable_postgres.restart)
    assert len(await pg_sink.read_dead_letters("run-r")) == 3
    assert (await pg_sink.write_batch([record("b-3", 3)])).written == ["b-3"]


async def test_postgres_state_reads_beside_writes_survive_dropped_connections(
    restartable_postgres: PostgresServer, pg_sink: PostgresSink
) -> None:
    """A shard reads stored state while its writer adds columns and upserts, on one
    connection; the server drops it at any point (a failover, an admin's terminate). Neither
    operation may see the other's half-done transaction: both finish, every row lands."""
    rng = random.Random(7)
    async with await psycopg.AsyncConnection.connect(
        restartable_postgres.dsn, autocommit=True
    ) as admin:
        for round_ in range(15):
            keys = [f"c-{round_}-{i}" for i in range(200)]
            batch = [
                Record(k, {"power": i, f"extra_{round_}": i}, {"id": k}, f"h{i}", 1.0)
                for i, k in enumerate(keys)
            ]
            writing = asyncio.create_task(pg_sink.write_batch(batch))
            reading = [asyncio.create_task(pg_sink.read_state(keys)) for _ in range(3)]
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            result = await writing
            await asyncio.gather(*reading)
            assert sorted(result.written) == sorted(keys) and not result.failed
            state = await pg_sink.read_state(keys)
            assert len(state) == 200, f"round {round_}"


async def test_postgres_gives_up_with_a_sink_error_without_the_password(
    restartable_postgres: PostgresServer,
) -> None:
    sink = PostgresSink(restartable_postgres.dsn, f"down_{next(_tables)}", retry=FAST)
    await sink.open()
    try:
        await asyncio.to_thread(restartable_postgres.stop)
        with pytest.raises(SinkError, match="still failing after 4 attempts") as error:
            await sink.write_batch([record("d-1", 1)])
        password = restartable_postgres.dsn.split(":")[2].split("@")[0]
        assert password not in str(error.value)
    finally:
        await asyncio.to_thread(restartable_postgres.start)
        await sink.close()


async def test_postgres_shards_creating_one_table_at_once_all_open(postgres_dsn: str) -> None:
    table = f"race_{next(_tables)}"
    sinks = [
        PostgresSink(postgres_dsn, table, conflict_key=["external_id", "tdsp"]) for _ in range(8)
    ]
    try:
        await asyncio.gather(*(s.open() for s in sinks))
        # Each shard also brings a new column: columns are added concurrently too.
        attributes = [{"external_id": f"e-{i}", "tdsp": "t", f"extra_{i % 3}": i} for i in range(8)]
        records = [Record(f"k-{i}", a, {}, "h", 1) for i, a in enumerate(attributes)]
        results = await asyncio.gather(
            *(s.write_batch([r]) for s, r in zip(sinks, records, strict=True))
        )
        assert sorted(k for r in results for k in r.written) == sorted(f"k-{i}" for i in range(8))
    finally:
        for sink in sinks:
            await sink.close()


async def test_postgres_migrates_a_dead_letters_table_from_before_members(
    postgres_dsn: str,
) -> None:
    table = f"oldpg_{next(_tables)}"
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as db:
        await db.execute(
            f"CREATE TABLE {table}_dead_letters (run text NOT NULL, key text NOT NULL, "
            "reason text NOT NULL, attempts integer NOT NULL, item jsonb NOT NULL, "
            "failed_at double precision NOT NULL, PRIMARY KEY (run, key))"
        )
        await db.execute(
            f"INSERT INTO {table}_dead_letters VALUES ('run-o', 'o-1', 'old', 2, '{{}}', 3)"
        )
    sinks = [PostgresSink(postgres_dsn, table) for _ in range(3)]
    try:
        await asyncio.gather(*(s.open() for s in sinks))  # migrating at once, too
        await sinks[0].write_dead_letters("run-o", [DeadLetter("o-1", "new", 1, {}, 4.0, "7")])
        read = await sinks[1].read_dead_letters("run-o")
        assert [(d.key, d.member, d.reason) for d in read] == OLD_AND_NEW
    finally:
        for sink in sinks:
            await sink.close()


# --- SQLite -----------------------------------------------------------------------------------


async def test_sqlite_shards_opening_at_once_and_an_old_dead_letters_table(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "shared.db")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "CREATE TABLE plants_dead_letters (run TEXT NOT NULL, key TEXT NOT NULL, "
            "reason TEXT NOT NULL, attempts INTEGER NOT NULL, item TEXT NOT NULL, "
            "failed_at REAL NOT NULL, PRIMARY KEY (run, key))"
        )
        db.execute("INSERT INTO plants_dead_letters VALUES ('run-o', 'o-1', 'old', 2, '{}', 3)")
    sinks = [SqliteSink(path, "plants") for _ in range(6)]
    try:
        await asyncio.gather(*(s.open() for s in sinks))
        results = await asyncio.gather(
            *(s.write_batch([record(f"q-{i}", i)]) for i, s in enumerate(sinks))
        )
        assert sorted(k for r in results for k in r.written) == sorted(f"q-{i}" for i in range(6))
        await sinks[0].write_dead_letters("run-o", [DeadLetter("o-1", "new", 1, {}, 4.0, "7")])
        read = await sinks[1].read_dead_letters("run-o")
        assert [(d.key, d.member, d.reason) for d in read] == OLD_AND_NEW
    finally:
        for sink in sinks:
            await sink.close()


async def test_eight_shards_opening_a_fresh_sqlite_file_at_once_never_see_it_locked(
    tmp_path: Path,
) -> None:
    """Switching a file to WAL while others open it can answer "database is locked" at once,
    past the busy timeout (7 trials in 100 of eight raw openers): each open retries it."""
    for trial in range(60):
        path = str(tmp_path / f"fresh-{trial}.db")
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("CREATE TABLE other (a)")  # a rollback-journal file, as a user's may be
        sinks = [SqliteSink(path, "plants") for _ in range(8)]
        try:
            await asyncio.gather(*(s.open() for s in sinks))
        finally:
            for sink in sinks:
                await sink.close()
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_dynamodb_conditional_puts_survive_resets_and_5xx(
    dynamodb_faults: FaultProxy,
) -> None:
    """With ``monotonicOn`` every record is a conditional PutItem; a reset after the put
    landed makes the retry meet its own write, which the ``<=`` condition lets through."""
    sink = dynamo(dynamodb_faults.url, f"mono-{next(_tables)}", monotonic_attribute="power")
    await sink.open()
    try:
        dynamodb_faults.reset_rate = 0.3
        dynamodb_faults.server_error_rate = 0.2
        result = await sink.write_batch([record(f"c-{i}", i) for i in range(25)])
        assert sorted(result.written) == sorted(f"c-{i}" for i in range(25)), result
        older = await sink.write_batch([record("c-3", 1)])
        assert older.stale == ["c-3"] and not older.failed
        dynamodb_faults.calm()
        assert len(await sink.read_state([f"c-{i}" for i in range(25)])) == 25
        assert dynamodb_faults.injected["reset"] > 0
        assert dynamodb_faults.injected["server_error"] > 0
    finally:
        await sink.close()


async def test_dynamodb_a_missing_table_is_a_config_error_at_once(dynamodb_endpoint: str) -> None:
    sink = DynamoDBSink(
        f"absent-{next(_tables)}", endpoint_url=dynamodb_endpoint, credentials=("t", "t"),
        sleep=lambda _: pytest.fail("a missing table is not transient"),
    )  # fmt: skip
    try:
        with pytest.raises(ManifestError, match="does not exist") as error:
            await sink.open()
        assert error.value.field == "spec.sink.dynamodb.table"
        assert error.value.hint is not None and "createTable" in error.value.hint
    finally:
        await sink.close()
