"""PostgreSQL: upsert on the user's conflict key (seed 003: ``(external_id, tdsp_duns)``).

One statement per batch: ``INSERT … VALUES … ON CONFLICT (<conflict key>) DO UPDATE SET …
WHERE <monotonic guard> RETURNING key`` — rows the guard refused are the stale ones. A
batch touching one conflict key twice would make PostgreSQL refuse the whole statement
("cannot affect row a second time"), so duplicates are merged first (last by orderBy).
Columns are created as attributes first appear (typed by the first value, or as ``columns``
says). The DSN can hold a password: it never appears in an error or a log line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from fleetsync.errors import SinkError
from fleetsync.sinks.base import DeadLetter, JSONValue, Record, RecordState, SinkCost, WriteResult
from fleetsync.sinks.merge import merge_batch

__all__ = ["PostgresSink", "redact_dsn"]

_BOOKKEEPING = ("key", "_fs_hash", "_fs_synced_at")


def redact_dsn(text: str) -> str:
    """Remove passwords from a DSN or a driver message that quotes one."""
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)


def _sql_type(value: JSONValue) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, dict | list):
        return "jsonb"
    return "text"


def _param(value: JSONValue) -> Any:
    return Jsonb(value) if isinstance(value, dict | list) else value


class PostgresSink:
    max_batch_size: int
    max_concurrent_writes = 1  # one connection; batches are large enough

    def __init__(
        self,
        dsn: str,
        table: str,
        *,
        conflict_key: list[str] | None = None,
        monotonic_attribute: str | None = None,
        columns: Mapping[str, str] | None = None,
        batch_size: int = 500,
    ) -> None:
        self._dsn = dsn
        self.table = table
        self.conflict_key = list(conflict_key or ["key"])
        self.monotonic_attribute = monotonic_attribute
        self.column_types = dict(columns or {})
        self.max_batch_size = batch_size
        self._cost = SinkCost()
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._columns: set[str] = set()

    @property
    def cost(self) -> SinkCost:
        return self._cost

    def _ident(self, name: str) -> sql.Composable:
        parts = name.split(".")
        return sql.Identifier(*parts)

    @property
    def _letters(self) -> sql.Composable:
        return self._ident(self.table + "_dead_letters")

    async def open(self) -> None:
        try:
            self._connection = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        except psycopg.Error as error:
            raise SinkError(f"postgres: cannot connect: {redact_dsn(str(error))}") from None
        t = self._ident(self.table)
        extra = [c for c in self.conflict_key if c not in _BOOKKEEPING]
        definitions = [
            sql.SQL("key text NOT NULL"),
            sql.SQL("_fs_hash text"),
            sql.SQL("_fs_synced_at double precision"),
            *(
                sql.SQL("{} {}").format(
                    sql.Identifier(c), sql.SQL(self.column_types.get(c, "text"))
                )
                for c in extra
            ),
        ]
        await self._execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(t, sql.SQL(", ").join(definitions))
        )
        index = sql.Identifier(self.table.split(".")[-1] + "_fs_conflict")
        await self._execute(
            sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})").format(
                index, t, sql.SQL(", ").join(map(sql.Identifier, self.conflict_key))
            )
        )
        if self.conflict_key != ["key"]:
            key_index = sql.Identifier(self.table.split(".")[-1] + "_fs_key")
            await self._execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (key)").format(key_index, t)
            )
        await self._execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (run text NOT NULL, key text NOT NULL, "
                "reason text NOT NULL, attempts integer NOT NULL, item jsonb NOT NULL, "
                "failed_at double precision NOT NULL, PRIMARY KEY (run, key))"
            ).format(self._letters)
        )
        await self._load_columns()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _execute(
        self, query: sql.SQL | sql.Composed, params: Sequence[Any] | None = None
    ) -> list[Any]:
        assert self._connection is not None, "open() first"
        try:
            async with self._connection.cursor() as cursor:
                await cursor.execute(query, params)
                return await cursor.fetchall() if cursor.description else []
        except psycopg.OperationalError as error:
            raise SinkError(f"postgres: {redact_dsn(str(error))}") from None

    async def _load_columns(self) -> None:
        schema, _, name = self.table.rpartition(".")
        rows = await self._execute(
            sql.SQL(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = %s AND (%s = '' OR table_schema = %s)"
            ),
            [name, schema, schema],
        )
        self._columns = {r[0] for r in rows}

    async def _ensure_columns(self, records: Sequence[Record]) -> None:
        for record in records:
            for name, value in record.attributes.items():
                if name in self._columns:
                    continue
                kind = self.column_types.get(name) or _sql_type(value)
                await self._execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                        self._ident(self.table), sql.Identifier(name), sql.SQL(kind)
                    )
                )
                self._columns.add(name)

    async def read_state(self, keys: Sequence[str]) -> Mapping[str, RecordState]:
        if not keys:
            return {}
        self._cost.calls += 1
        m = self.monotonic_attribute
        mono = sql.Identifier(m) if m and m in self._columns else sql.SQL("NULL")
        rows = await self._execute(
            sql.SQL("SELECT key, _fs_hash, _fs_synced_at, {} FROM {} WHERE key = ANY(%s)").format(
                mono, self._ident(self.table)
            ),
            [list(keys)],
        )
        return {r[0]: RecordState(r[1], r[2], r[3]) for r in rows}

    def _conflict_value(self, record: Record) -> tuple[object, ...]:
        return tuple(
            record.key if c == "key" else json.dumps(record.attributes.get(c), sort_keys=True)
            for c in self.conflict_key
        )

    async def write_batch(self, records: Sequence[Record]) -> WriteResult:
        merged, superseded = merge_batch(records, key=self._conflict_value)
        result = WriteResult()
        if not merged:
            return result
        missing = [
            r.key
            for r in merged
            if any(c != "key" and r.attributes.get(c) is None for c in self.conflict_key)
        ]
        if missing:
            for key in missing:
                result.failed[key] = f"conflict key {self.conflict_key} has an empty value"
            merged = [r for r in merged if r.key not in set(missing)]
            if not merged:
                return result
        await self._ensure_columns(merged)
        names = sorted({n for r in merged for n in r.attributes} - set(_BOOKKEEPING))
        columns = ["key", "_fs_hash", "_fs_synced_at", *names]
        t = self._ident(self.table)
        updates = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in columns
            if c not in self.conflict_key
        )
        guard: sql.Composable = sql.SQL("")
        m = self.monotonic_attribute
        if m:
            q = sql.Identifier(m)
            guard = sql.SQL(
                " WHERE {t}.{q} IS NULL OR EXCLUDED.{q} IS NULL OR {t}.{q} <= EXCLUDED.{q}"
            ).format(t=t, q=q)
        row = sql.SQL("(") + sql.SQL(", ").join([sql.Placeholder()] * len(columns)) + sql.SQL(")")
        query = sql.SQL(
            "INSERT INTO {t} ({cols}) VALUES {rows} ON CONFLICT ({conflict}) DO UPDATE SET "
            "{updates}{guard} RETURNING key"
        ).format(
            t=t,
            cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            rows=sql.SQL(", ").join([row] * len(merged)),
            conflict=sql.SQL(", ").join(map(sql.Identifier, self.conflict_key)),
            updates=updates,
            guard=guard,
        )
        params: list[Any] = []
        for record in merged:
            params += [record.key, record.content_hash, record.synced_at]
            params += [_param(record.attributes.get(n)) for n in names]
        self._cost.calls += 1
        try:
            rows = await self._execute(query, params)
        except psycopg.Error as error:
            # A row the database refuses (a type mismatch, a constraint) fails this batch's
            # items with the reason; the engine dead-letters them and goes on.
            reason = f"postgres refused the batch: {redact_dsn(str(error)).splitlines()[0]}"
            for record in merged:
                result.failed[record.key] = reason
            return result
        done = {r[0] for r in rows}
        for record in merged:
            (result.written if record.key in done else result.stale).append(record.key)
        result.written += [k for k in superseded if k not in done and k not in result.stale]
        self._cost.write_units += len(done)
        return result

    async def write_dead_letters(self, run: str, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        self._cost.calls += 1
        row = sql.SQL("(%s, %s, %s, %s, %s, %s)")
        query = sql.SQL(
            "INSERT INTO {} (run, key, reason, attempts, item, failed_at) VALUES {} "
            "ON CONFLICT (run, key) DO UPDATE SET reason = EXCLUDED.reason, "
            "attempts = EXCLUDED.attempts, item = EXCLUDED.item, failed_at = EXCLUDED.failed_at"
        ).format(self._letters, sql.SQL(", ").join([row] * len(letters)))
        params: list[Any] = []
        for le in letters:
            params += [run, le.key, le.reason, le.attempts, Jsonb(dict(le.item)), le.failed_at]
        await self._execute(query, params)

    async def read_dead_letters(self, run: str, limit: int | None = None) -> list[DeadLetter]:
        self._cost.calls += 1
        rows = await self._execute(
            sql.SQL(
                "SELECT key, reason, attempts, item, failed_at FROM {} WHERE run = %s "
                "ORDER BY key LIMIT %s"
            ).format(self._letters),
            [run, limit],
        )
        return [DeadLetter(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def clear_dead_letters(self, run: str, keys: Sequence[str]) -> None:
        if keys:
            self._cost.calls += 1
            await self._execute(
                sql.SQL("DELETE FROM {} WHERE run = %s AND key = ANY(%s)").format(self._letters),
                [run, list(keys)],
            )
