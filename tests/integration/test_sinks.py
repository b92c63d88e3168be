"""The three sinks against real servers: SQLite on disk, PostgreSQL, DynamoDB (moto)."""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
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


# Passwords with every character a URI gives meaning to, percent-encoded as they must be.
CANARY_PASSWORDS = ["pa%25ss-canary", "p%40ss%3Aw%2Frd-canary", "sem;i%20colon-canary"]


@pytest.mark.parametrize("password", CANARY_PASSWORDS)
async def test_a_refused_login_never_prints_the_password_however_encoded(
    password: str,
) -> None:
    from urllib.parse import unquote

    sink = PostgresSink(f"postgresql://app:{password}@127.0.0.1:9/postgres", "plans")
    with pytest.raises(SinkError) as error:
        await sink.open()
    text = str(error.value)
    assert password not in text and unquote(password) not in text, text


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:pa%ss-canary@127.0.0.1:9/prod",  # libpq quotes a bad escape
        "postgresql://app:p@ss:w/rd-canary@127.0.0.1:9/prod",  # libpq splits at the first @
    ],
)
def test_a_malformed_dsn_is_a_config_error_that_quotes_nothing(dsn: str, tmp_path: Any) -> None:
    from fleetsync.api.v1alpha1 import SyncJobSpec
    from fleetsync.errors import ManifestError
    from fleetsync.worker.secrets import SecretResolver
    from fleetsync.worker.sinkfactory import build_sink

    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "dsn").write_text(dsn)
    spec = SyncJobSpec.model_validate({
        "fleet": {"inventory": {"inline": [{"id": "a"}]}},
        "source": {"http": {"url": "http://127.0.0.1:9/{id}"}},
        "sink": {"postgres": {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "table": "t"}},
    })  # fmt: skip
    with pytest.raises(ManifestError) as error:
        build_sink(spec, secrets=SecretResolver(str(tmp_path)), base_dir=tmp_path)
    text = str(error.value)
    assert "spec.sink.postgres.dsnSecretRef" in text and "percent-encode" in text
    assert "canary" not in text and "ss:w" not in text, text


# --- one bad record fails one item (issue 12) ------------------------------------------------

# Values no sink stores, as a vendor's JSON can carry them (Python's json accepts all three).
UNSTORABLE = json.loads('[NaN, Infinity, -Infinity, 1e999, {"deep": [1, NaN]}]')


@pytest.mark.parametrize("bad", UNSTORABLE, ids=["nan", "inf", "-inf", "1e999", "nested"])
async def test_an_unstorable_value_fails_only_its_record(make_sink: Any, bad: Any) -> None:
    sink = await make_sink()
    batch = [record(f"b-{i}", float(i)) for i in range(20)]
    batch[7] = Record("b-7", {"power": bad, "updated_at": "x"}, {"id": "b-7"}, "bad", 1.0)
    result = await sink.write_batch(batch)
    assert list(result.failed) == ["b-7"]
    assert "'power" in result.failed["b-7"], result.failed
    assert any(w in result.failed["b-7"] for w in ("NaN", "Infinity")), result.failed
    assert sorted(result.written) == sorted(f"b-{i}" for i in range(20) if i != 7)
    state = await sink.read_state([f"b-{i}" for i in range(20)])
    assert set(state) == set(result.written)


def _sink_kind(sink: Any) -> str:
    return type(sink).__name__.removesuffix("Sink").lower()


# Values one store refuses that others keep: (value, words the reason must hold).
REFUSED_BY = {
    "dynamodb": [
        (int("1" * 40), "40 significant digits"),
        (1e200, "too large"),
        (-1e-200, "too small"),
        ({"nested": [1, int("9" * 39)]}, "39 significant digits"),
    ],
    "postgres": [(2**70, "outside the range of its bigint column"), ("a\x00b", "NUL")],
    "sqlite": [(2**70, "beyond 64 bits")],
}


async def test_values_one_store_refuses_fail_only_their_records(make_sink: Any) -> None:
    sink = await make_sink()
    await sink.write_batch([record("seed", 1)])  # power: a number column where typed
    cases = REFUSED_BY[_sink_kind(sink)]
    batch = [record(f"v-{i}", float(i)) for i in range(3 * len(cases))]
    for n, (value, _) in enumerate(cases):
        batch[3 * n + 1] = Record(f"v-{3 * n + 1}", {"power": value}, {"id": f"v-{3 * n + 1}"},
                                  "bad", 1.0)  # fmt: skip
    result = await sink.write_batch(batch)
    assert sorted(result.failed) == sorted(f"v-{3 * n + 1}" for n in range(len(cases)))
    for n, (_, words) in enumerate(cases):
        assert words in result.failed[f"v-{3 * n + 1}"], result.failed
        assert "'power" in result.failed[f"v-{3 * n + 1}"]
    assert len(result.written) == 2 * len(cases)
    assert set(await sink.read_state([r.key for r in batch])) == {*result.written}


async def test_a_record_the_server_refuses_is_isolated_from_its_batch(make_sink: Any) -> None:
    """Refusals no check foresees: DynamoDB's 400 KB item limit, a PostgreSQL column
    refusing text, a user's SQLite trigger… found by halving the refused batch."""
    sink = await make_sink()
    kind = _sink_kind(sink)
    await sink.write_batch([record("seed", 1)])
    if kind == "dynamodb":
        bad = {"power": 1.0, "blob": "x" * 500_000}
    elif kind == "postgres":
        bad = {"power": "not a number"}  # power is a double precision column
    else:
        with contextlib.closing(sqlite3.connect(sink.path)) as db:
            db.execute(
                f'CREATE TRIGGER "{sink.table}_positive" BEFORE INSERT ON "{sink.table}" '
                "WHEN NEW.power < 0 BEGIN SELECT RAISE(ABORT, 'power must be >= 0'); END"
            )
        bad = {"power": -1.0}
    batch = [record(f"s-{i}", float(i)) for i in range(25)]
    batch[11] = Record("s-11", bad, {"id": "s-11"}, "bad", 1.0)
    result = await sink.write_batch(batch)
    assert list(result.failed) == ["s-11"], result.failed
    assert "refused" in result.failed["s-11"]
    assert len(result.written) == 24
    assert len(await sink.read_state([r.key for r in batch])) == 24


# --- groups keep every member (issue 12 item 4) -----------------------------------------------


async def test_dead_letters_keep_every_member_of_a_key(make_sink: Any) -> None:
    sink = await make_sink()
    group = [DeadLetter("m-1", f"bad reading {i}", 1, {"id": "m-1", "i": i}, 5.0, str(i))
             for i in range(4)]  # fmt: skip
    other = DeadLetter("m-2", "bad", 1, {"id": "m-2"}, 5.0, "9")
    await sink.write_dead_letters("run-g", [*group, other])
    await sink.write_dead_letters("run-g", group[:1])  # written again: still one letter
    read = await sink.read_dead_letters("run-g")
    assert [(d.key, d.member, d.reason) for d in read] == [
        *(("m-1", str(i), f"bad reading {i}") for i in range(4)),
        ("m-2", "9", "bad"),
    ]
    assert read[2].item == {"id": "m-1", "i": 2}
    await sink.clear_dead_letters("run-g", ["m-1"])
    assert [(d.key, d.member) for d in await sink.read_dead_letters("run-g")] == [("m-2", "9")]


async def test_a_dead_letter_of_an_unstorable_item_is_kept(make_sink: Any) -> None:
    sink = await make_sink()
    item = json.loads('{"id": "n-1", "power": NaN, "note": "a\\u0000b"}')
    await sink.write_dead_letters("run-n", [DeadLetter("n-1", "NaN", 1, item, 5.0, "0")])
    (letter,) = await sink.read_dead_letters("run-n")
    assert letter.key == "n-1" and letter.item["power"] == "nan"
