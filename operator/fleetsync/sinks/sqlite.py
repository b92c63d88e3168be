"""SQLite: the embedded default sink — one file, no server, safe for several local shards.

WAL mode lets readers and one writer proceed together, and ``busy_timeout`` makes the shard
processes of ``fleetsync run`` queue for the write lock instead of failing. Each batch is
one transaction: an ``INSERT … ON CONFLICT DO UPDATE … WHERE <monotonic guard>`` whose
``RETURNING`` tells which rows were written (the rest were stale). Attribute columns are
added when a batch first carries them.

One bad record fails one item. NaN and ±Infinity fail their record (with the reason
naming the attribute) rather than being stored: SQLite silently turns NaN into NULL, JSON
text of them is not JSON, and the other sinks refuse them too, so a run means the same
whatever the sink. Integers beyond 64 bits fail likewise (sqlite3 cannot bind them). A
record SQLite still refuses is found by halving the batch; the others are written.
Dead letters are keyed by (run, key, member); an older table keyed by (run, key) is
rebuilt with ``member = ''`` on open.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from fleetsync.backoff import Backoff
from fleetsync.errors import SinkError
from fleetsync.sinks.base import DeadLetter, JSONValue, Record, RecordState, SinkCost, WriteResult
from fleetsync.sinks.merge import merge_batch
from fleetsync.sinks.values import json_text, refusal

__all__ = ["SqliteSink"]

_BOOKKEEPING = ("key", "_fs_hash", "_fs_synced_at")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _affinity(value: JSONValue) -> str:
    if isinstance(value, bool | int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    return "TEXT"


def _int64_problem(value: JSONValue) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return "is an integer beyond 64 bits, which SQLite cannot store"
    return None


# Refusals of one record (a value sqlite3 cannot bind or SQLite refuses), not of the sink.
_RECORD_ERRORS = (
    OverflowError,
    ValueError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
)


def _stored(value: JSONValue) -> object:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return value


# Switching a file to WAL while other connections open it (shards starting together) can
# answer SQLITE_BUSY at once, without the busy handler: 1 test run in 15 failed so. Retried:
# 40 tries backing off from 5 ms to 0.5 s (about 10 s in all); the first within milliseconds.
_WAL_TRIES = 40
_WAL_BACKOFF = Backoff(base=0.005, cap=0.5)


def _to_wal(connection: sqlite3.Connection) -> None:
    rng = random.Random()
    for attempt in range(1, _WAL_TRIES + 1):
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == _WAL_TRIES:
                raise
            time.sleep(_WAL_BACKOFF.delay(attempt, rng))  # an executor thread: blocking is fine


class SqliteSink:
    max_batch_size: int
    max_concurrent_writes = 1  # SQLite has one writer; more would only wait for the lock

    def __init__(
        self,
        path: str,
        table: str,
        *,
        monotonic_attribute: str | None = None,
        batch_size: int = 500,
    ) -> None:
        self.path = path
        self.table = table
        self.monotonic_attribute = monotonic_attribute
        self.max_batch_size = batch_size
        self._cost = SinkCost()
        self._connection: sqlite3.Connection | None = None
        self._columns: set[str] = set()
        # One thread owns the connection: sqlite3 objects must stay on their thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

    @property
    def cost(self) -> SinkCost:
        return self._cost

    async def _run(self, fn: object, *args: object) -> object:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)  # type: ignore[arg-type]
        except sqlite3.Error as error:
            raise SinkError(f"sqlite {self.path}: {error}") from error

    # --- lifecycle -------------------------------------------------------------------------

    def _open(self) -> None:
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        connection.execute("PRAGMA busy_timeout=60000")  # first: shards open at once
        _to_wal(connection)
        connection.execute("PRAGMA synchronous=NORMAL")
        t = _quote(self.table)
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {t} "
            "(key TEXT PRIMARY KEY, _fs_hash TEXT, _fs_synced_at REAL)"
        )
        self._connection = connection
        self._letters_table()
        self._load_columns()

    def _letters_table(self) -> None:
        assert self._connection is not None
        dl = _quote(self.table + "_dead_letters")
        create = (
            "CREATE TABLE IF NOT EXISTS {} (run TEXT NOT NULL, key TEXT NOT NULL, "
            "member TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL, attempts INTEGER NOT NULL, "
            "item TEXT NOT NULL, failed_at REAL NOT NULL, PRIMARY KEY (run, key, member))"
        )
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")  # shard processes migrate one at a time
        try:
            connection.execute(create.format(dl))
            columns = {row[1] for row in connection.execute(f"PRAGMA table_info({dl})")}
            if "member" not in columns:  # a table from before members: rebuild it
                old = _quote(self.table + "_dead_letters_old")
                connection.execute(f"ALTER TABLE {dl} RENAME TO {old}")
                connection.execute(create.format(dl))
                connection.execute(
                    f"INSERT INTO {dl} (run, key, reason, attempts, item, failed_at) "
                    f"SELECT run, key, reason, attempts, item, failed_at FROM {old}"
                )
                connection.execute(f"DROP TABLE {old}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def _load_columns(self) -> None:
        assert self._connection is not None
        rows = self._connection.execute(f"PRAGMA table_info({_quote(self.table)})").fetchall()
        self._columns = {row[1] for row in rows}

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        if self._connection is not None:
            await self._run(self._connection.close)
            self._connection = None
        self._executor.shutdown(wait=True)

    # --- reads -----------------------------------------------------------------------------

    def _read_state(self, keys: Sequence[str]) -> dict[str, RecordState]:
        assert self._connection is not None
        monotonic = self.monotonic_attribute
        column = _quote(monotonic) if monotonic and monotonic in self._columns else "NULL"
        marks = ",".join("?" * len(keys))
        rows = self._connection.execute(
            f"SELECT key, _fs_hash, _fs_synced_at, {column} FROM {_quote(self.table)} "
            f"WHERE key IN ({marks})",
            list(keys),
        ).fetchall()
        return {row[0]: RecordState(row[1], row[2], row[3]) for row in rows}

    async def read_state(self, keys: Sequence[str]) -> Mapping[str, RecordState]:
        if not keys:
            return {}
        self._cost.calls += 1
        result = await self._run(self._read_state, list(keys))
        assert isinstance(result, dict)
        return result

    # --- writes ----------------------------------------------------------------------------

    def _ensure_columns(self, records: Sequence[Record]) -> None:
        assert self._connection is not None
        for record in records:
            for name, value in record.attributes.items():
                if name in self._columns or name in _BOOKKEEPING:
                    continue
                try:
                    self._connection.execute(
                        f"ALTER TABLE {_quote(self.table)} ADD COLUMN {_quote(name)} "
                        f"{_affinity(value)}"
                    )
                except sqlite3.OperationalError as error:
                    if "duplicate column" not in str(error):
                        raise  # another shard process added it first: fine
                self._columns.add(name)

    def _write(self, records: Sequence[Record]) -> list[str]:
        assert self._connection is not None
        self._ensure_columns(records)
        names = sorted({n for r in records for n in r.attributes} - set(_BOOKKEEPING))
        columns = ["key", "_fs_hash", "_fs_synced_at", *names]
        quoted = ", ".join(_quote(c) for c in columns)
        updates = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in columns[1:])
        guard = ""
        m = self.monotonic_attribute
        if m:
            t, q = _quote(self.table), _quote(m)
            guard = f" WHERE {t}.{q} IS NULL OR excluded.{q} IS NULL OR {t}.{q} <= excluded.{q}"
        row_marks = "(" + ", ".join("?" * len(columns)) + ")"
        sql = (
            f"INSERT INTO {_quote(self.table)} ({quoted}) VALUES "
            + ", ".join([row_marks] * len(records))
            + f" ON CONFLICT(key) DO UPDATE SET {updates}{guard} RETURNING key"
        )
        params: list[object] = []
        for record in records:
            params += [record.key, record.content_hash, record.synced_at]
            params += [_stored(record.attributes.get(n)) for n in names]
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            written = [row[0] for row in connection.execute(sql, params).fetchall()]
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return written

    def _write_isolating(self, records: Sequence[Record], result: WriteResult) -> None:
        """Write ``records``; a refused batch (rolled back whole) is halved until the
        refused record is alone."""
        self._cost.calls += 1
        try:
            done = set(self._write(records))
        except _RECORD_ERRORS as error:
            if len(records) == 1:
                result.failed[records[0].key] = f"sqlite refused the record: {error}"
                return
            half = len(records) // 2
            self._write_isolating(records[:half], result)
            self._write_isolating(records[half:], result)
            return
        for record in records:
            (result.written if record.key in done else result.stale).append(record.key)
        self._cost.write_units += len(done)

    async def write_batch(self, records: Sequence[Record]) -> WriteResult:
        merged, superseded = merge_batch(records)
        result = WriteResult()
        ready = []
        for record in merged:
            reason = refusal(record.attributes, _int64_problem)
            if reason is None:
                ready.append(record)
            else:
                result.failed[record.key] = reason
        if ready:
            await self._run(self._write_isolating, ready, result)
        done = set(result.written) | set(result.stale) | set(result.failed)
        result.written += [k for k in dict.fromkeys(superseded) if k not in done]
        return result

    # --- dead letters ----------------------------------------------------------------------

    def _write_letters(self, run: str, letters: Sequence[DeadLetter]) -> None:
        assert self._connection is not None
        self._connection.executemany(
            f"INSERT INTO {_quote(self.table + '_dead_letters')} "
            "(run, key, member, reason, attempts, item, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(run, key, member) DO UPDATE SET reason = excluded.reason, "
            "attempts = excluded.attempts, item = excluded.item, failed_at = excluded.failed_at",
            [
                (run, le.key, le.member, le.reason, le.attempts, json_text(le.item), le.failed_at)
                for le in letters
            ],
        )

    async def write_dead_letters(self, run: str, letters: Sequence[DeadLetter]) -> None:
        if letters:
            self._cost.calls += 1
            await self._run(self._write_letters, run, list(letters))

    def _read_letters(self, run: str, limit: int | None) -> list[DeadLetter]:
        assert self._connection is not None
        rows = self._connection.execute(
            f"SELECT key, reason, attempts, item, failed_at, member FROM "
            f"{_quote(self.table + '_dead_letters')} WHERE run = ? ORDER BY key, member LIMIT ?",
            (run, -1 if limit is None else limit),
        ).fetchall()
        return [DeadLetter(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    async def read_dead_letters(self, run: str, limit: int | None = None) -> list[DeadLetter]:
        self._cost.calls += 1
        letters = await self._run(self._read_letters, run, limit)
        assert isinstance(letters, list)
        return letters

    def _clear(self, run: str, keys: Sequence[str]) -> None:
        assert self._connection is not None
        self._connection.executemany(
            f"DELETE FROM {_quote(self.table + '_dead_letters')} WHERE run = ? AND key = ?",
            [(run, key) for key in keys],
        )

    async def clear_dead_letters(self, run: str, keys: Sequence[str]) -> None:
        if keys:
            self._cost.calls += 1
            await self._run(self._clear, run, list(keys))
