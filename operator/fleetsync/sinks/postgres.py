"""PostgreSQL: upsert on the user's conflict key (seed 003: ``(external_id, tdsp_duns)``).

One statement per batch: ``INSERT … VALUES … ON CONFLICT (<conflict key>) DO UPDATE SET …
WHERE <monotonic guard> RETURNING key`` — rows the guard refused are the stale ones. A
batch touching one conflict key twice would make PostgreSQL refuse the whole statement
("cannot affect row a second time"), so duplicates are merged first (last by orderBy).
Columns are created as attributes first appear (typed by the first value, or as ``columns``
says). The DSN can hold a password: it never appears in an error or a log line.

One bad record fails one item: values no column can hold (NaN, NUL characters, an integer
outside its column's range) are refused before sending, and when PostgreSQL still refuses
the multi-row statement (a DataError, a constraint) the batch is halved until the refused
record is alone; the others are written. A lost connection is not a bad record: the
connection, its retries and its one-operation-at-a-time rule are
:mod:`fleetsync.sinks.postgres_session`. Shards opening at once create and migrate the
tables under a transaction-scoped advisory lock, so they never race.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from fleetsync.errors import ManifestError, SinkError
from fleetsync.sinks.base import DeadLetter, JSONValue, Record, RecordState, SinkCost, WriteResult
from fleetsync.sinks.merge import merge_batch
from fleetsync.sinks.postgres_dsn import DsnRedactor, redact_dsn
from fleetsync.sinks.postgres_schema import BOOKKEEPING, ident, table_statements
from fleetsync.sinks.postgres_session import PgSession
from fleetsync.sinks.postgres_values import column_refusal, no_nul, sql_type
from fleetsync.sinks.retry import SinkRetry
from fleetsync.sinks.values import json_safe

__all__ = ["PostgresSink", "redact_dsn"]

_BOOKKEEPING = BOOKKEEPING


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
        retry: SinkRetry | None = None,
    ) -> None:
        self._redact = DsnRedactor(dsn)
        self.table = table
        self.conflict_key = list(conflict_key or ["key"])
        self.monotonic_attribute = monotonic_attribute
        self.column_types = dict(columns or {})
        self.max_batch_size = batch_size
        self._cost = SinkCost()
        self._db = PgSession(
            dsn, table=table, retry=retry or SinkRetry(), cost=self._cost, cause=self._cause
        )
        self._execute = self._db.execute
        self._locked = self._db.locked
        self._columns: dict[str, str] = {}  # name -> PostgreSQL type

    def _cause(self, error: BaseException) -> str:
        """The first line of a driver error, with the DSN's password taken out."""
        return (self._redact(str(error)).splitlines() or [type(error).__name__])[0]

    @property
    def cost(self) -> SinkCost:
        return self._cost

    def _ident(self, name: str) -> sql.Identifier:
        return ident(name)

    @property
    def _letters(self) -> sql.Identifier:
        return ident(self.table + "_dead_letters")

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        try:  # fail fast here: a wrong host or password is no transient fault
            await self._db.connect()
        except psycopg.Error as error:
            raise _connect_failure(self._cause(error)) from None
        await self._locked(
            "create tables", table_statements(self.table, self.conflict_key, self.column_types)
        )
        await self._migrate_letters()
        await self._load_columns()

    async def _migrate_letters(self) -> None:
        """Dead letters tables from before members: add ``member`` to the primary key."""
        name = self._letters.as_string(None)
        rows = await self._execute(
            sql.SQL(
                "SELECT conname, array_length(conkey, 1) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype = 'p'"
            ),
            [name],
            "read the dead letters table",
        )
        if not rows or rows[0][1] == 3:
            return
        await self._locked(
            "migrate the dead letters table",
            [
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS member text NOT NULL DEFAULT ''")
                .format(self._letters),
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}, "
                        "ADD PRIMARY KEY (run, key, member)")
                .format(self._letters, sql.Identifier(rows[0][0])),
            ],
        )  # fmt: skip

    async def close(self) -> None:
        await self._db.close()

    async def _load_columns(self) -> None:
        schema, _, name = self.table.rpartition(".")
        rows = await self._execute(
            sql.SQL(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s AND (%s = '' OR table_schema = %s)"
            ),
            [name, schema, schema],
            "read columns",
        )
        self._columns = {r[0]: r[1] for r in rows}

    def _column_type(self, name: str, value: JSONValue) -> str:
        return self._columns.get(name) or self.column_types.get(name) or sql_type(value)

    async def _ensure_columns(self, records: Sequence[Record]) -> None:
        new: dict[str, str] = {}
        for record in records:
            for name, value in record.attributes.items():
                if name not in self._columns and name not in new:
                    new[name] = self._column_type(name, value)
        if not new:
            return
        await self._locked(
            "add columns",
            [
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    self._ident(self.table), sql.Identifier(name), sql.SQL(kind)
                )
                for name, kind in new.items()
            ],
        )
        await self._load_columns()

    # --- reads -----------------------------------------------------------------------------

    async def read_state(self, keys: Sequence[str]) -> Mapping[str, RecordState]:
        if not keys:
            return {}
        m = self.monotonic_attribute
        mono = sql.Identifier(m) if m and m in self._columns else sql.SQL("NULL")
        query = sql.SQL("SELECT key, _fs_hash, _fs_synced_at, {} FROM {} WHERE key = ANY(%s)")
        rows = await self._execute(
            query.format(mono, self._ident(self.table)), [no_nul(list(keys))], "read state"
        )
        return {r[0]: RecordState(r[1], r[2], r[3]) for r in rows}

    # --- writes ----------------------------------------------------------------------------

    def _conflict_value(self, record: Record) -> tuple[object, ...]:
        return tuple(
            record.key if c == "key" else json.dumps(record.attributes.get(c), sort_keys=True)
            for c in self.conflict_key
        )

    def _refusal(self, record: Record) -> str | None:
        if any(c != "key" and record.attributes.get(c) is None for c in self.conflict_key):
            return f"conflict key {self.conflict_key} has an empty value"
        return column_refusal(record.key, record.attributes, self._column_type)

    async def write_batch(self, records: Sequence[Record]) -> WriteResult:
        merged, superseded = merge_batch(records, key=self._conflict_value)
        result = WriteResult()
        ready = []
        for record in merged:
            reason = self._refusal(record)
            if reason is None:
                ready.append(record)
            else:
                result.failed[record.key] = reason
        if ready:
            await self._ensure_columns(ready)
            await self._upsert_isolating(ready, result)
        done = set(result.written) | set(result.stale) | set(result.failed)
        result.written += [k for k in dict.fromkeys(superseded) if k not in done]
        return result

    async def _upsert_isolating(self, records: Sequence[Record], result: WriteResult) -> None:
        """Upsert ``records``; a refused statement is halved until the refused record is
        alone (the statement is atomic: a refusal wrote nothing)."""
        try:
            done = await self._upsert(records)
        except psycopg.Error as error:
            if len(records) > 1:
                half = len(records) // 2
                await self._upsert_isolating(records[:half], result)
                await self._upsert_isolating(records[half:], result)
                return
            column = getattr(error.diag, "column_name", None)
            where = f" (column {column!r})" if column else ""
            result.failed[records[0].key] = f"postgres refused the record{where}: " + self._cause(
                error
            )
            return
        for record in records:
            (result.written if record.key in done else result.stale).append(record.key)
        self._cost.write_units += len(done)

    async def _upsert(self, records: Sequence[Record]) -> set[str]:
        names = sorted({n for r in records for n in r.attributes} - set(_BOOKKEEPING))
        columns = ["key", "_fs_hash", "_fs_synced_at", *names]
        t = self._ident(self.table)
        updates = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in columns
            if c not in self.conflict_key
        )
        guard: sql.Composable = sql.SQL("")
        if m := self.monotonic_attribute:
            guard = sql.SQL(
                " WHERE {t}.{q} IS NULL OR EXCLUDED.{q} IS NULL OR {t}.{q} <= EXCLUDED.{q}"
            ).format(t=t, q=sql.Identifier(m))
        row = sql.SQL("(") + sql.SQL(", ").join([sql.Placeholder()] * len(columns)) + sql.SQL(")")
        query = sql.SQL(
            "INSERT INTO {t} ({cols}) VALUES {rows} ON CONFLICT ({conflict}) DO UPDATE SET "
            "{updates}{guard} RETURNING key"
        ).format(
            t=t,
            cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            rows=sql.SQL(", ").join([row] * len(records)),
            conflict=sql.SQL(", ").join(map(sql.Identifier, self.conflict_key)),
            updates=updates,
            guard=guard,
        )
        params: list[Any] = []
        for record in records:
            params += [record.key, record.content_hash, record.synced_at]
            params += [_param(record.attributes.get(n)) for n in names]
        return {r[0] for r in await self._execute(query, params, "write", refusals=True)}

    # --- dead letters ----------------------------------------------------------------------

    async def write_dead_letters(self, run: str, letters: Sequence[DeadLetter]) -> None:
        # One row per (key, member): a statement touching a row twice would be refused.
        unique = list({(le.key, le.member): le for le in letters}.values())
        if not unique:
            return
        row = sql.SQL("(%s, %s, %s, %s, %s, %s, %s)")
        query = sql.SQL(
            "INSERT INTO {} (run, key, member, reason, attempts, item, failed_at) VALUES {} "
            "ON CONFLICT (run, key, member) DO UPDATE SET reason = EXCLUDED.reason, "
            "attempts = EXCLUDED.attempts, item = EXCLUDED.item, failed_at = EXCLUDED.failed_at"
        ).format(self._letters, sql.SQL(", ").join([row] * len(unique)))
        params: list[Any] = []
        for le in unique:
            item = Jsonb(no_nul(json_safe(dict(le.item))))
            params += [*no_nul([run, le.key, le.member, le.reason]), le.attempts, item]
            params.append(le.failed_at)
        await self._execute(query, params, "write dead letters")

    async def read_dead_letters(self, run: str, limit: int | None = None) -> list[DeadLetter]:
        rows = await self._execute(
            sql.SQL(
                "SELECT key, reason, attempts, item, failed_at, member FROM {} WHERE run = %s "
                "ORDER BY key, member LIMIT %s"
            ).format(self._letters),
            [run, limit],
            "read dead letters",
        )
        return [DeadLetter(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def clear_dead_letters(self, run: str, keys: Sequence[str]) -> None:
        if keys:
            await self._execute(
                sql.SQL("DELETE FROM {} WHERE run = %s AND key = ANY(%s)").format(self._letters),
                [run, no_nul(list(keys))],
                "clear dead letters",
            )


# What a refused login says: the DSN (user, password, database) is wrong, not the network.
_LOGIN_REFUSED = ("password authentication failed", "no password supplied", "does not exist")


def _connect_failure(cause: str) -> ManifestError | SinkError:
    """A failed first connection: a login refused is configuration (exit 64), anything
    else (nothing listening, a timeout) is infrastructure that may recover (exit 75)."""
    if any(text in cause for text in _LOGIN_REFUSED):
        return ManifestError(
            [("spec.sink.postgres.dsnSecretRef", f"PostgreSQL refused the login: {cause}")],
            hint="fix the user, password or database in the DSN the Secret holds",
        )
    return SinkError(
        f"postgres: cannot connect: {cause}",
        field="spec.sink.postgres",
        hint="is PostgreSQL running and reachable from here? Run again to resume",
    )
