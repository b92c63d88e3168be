"""PostgreSQL's one connection, used one operation at a time, and what a lost one costs.

A lost connection (a restart, a failover, an admin's terminate) is not a bad record: the
operation reconnects and runs again, by the one backoff policy, until the budget
(:mod:`fleetsync.sinks.retry`) is spent. One operation holds the connection at a time, so a
statement of the state reads never runs inside the writer's transaction, and a retry never
closes a connection another operation has just opened. A connection left outside IDLE (a
COMMIT or ROLLBACK lost with it) is never used again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import pq, sql

from fleetsync.errors import SinkError
from fleetsync.sinks.base import SinkCost
from fleetsync.sinks.retry import Attempts, SinkRetry

__all__ = ["Connection", "PgSession", "is_lost"]

T = TypeVar("T")
Connection = psycopg.AsyncConnection[Any]


def is_lost(error: psycopg.Error) -> bool:
    """Whether retrying on a fresh connection can help (not a refusal of the statement)."""
    if isinstance(error, psycopg.errors.ProgramLimitExceeded):
        return False  # e.g. an index row too large: the record, not the server
    if isinstance(error, psycopg.errors.InFailedSqlTransaction):
        return True  # a transaction cut short by a lost connection: a fresh one can go on
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


class PgSession:
    """The connection of one sink (``table`` names it in errors; ``cause`` renders a driver
    error without the DSN's password; every attempt counts in ``cost.calls``)."""

    def __init__(
        self,
        dsn: str,
        *,
        table: str,
        retry: SinkRetry,
        cost: SinkCost,
        cause: Callable[[BaseException], str],
    ) -> None:
        self._dsn = dsn
        self._table = table
        self._retry = retry
        self._cost = cost
        self._cause = cause
        self._rng = random.Random()
        self._connection: Connection | None = None
        self._in_use = asyncio.Lock()

    async def connect(self) -> None:
        """Connect now (the driver's error propagates: the caller says what it means)."""
        async with self._in_use:
            await self._live()

    async def close(self) -> None:
        async with self._in_use:
            await self._drop()

    async def _live(self) -> Connection:
        connection = self._connection
        if (
            connection is None
            or connection.closed
            or connection.broken
            or connection.info.transaction_status != pq.TransactionStatus.IDLE
        ):
            await self._drop()
            connection = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            self._connection = connection
        return connection

    async def _drop(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()

    async def retrying(self, what: str, work: Callable[[Connection], Awaitable[T]]) -> T:
        """``work`` on a live connection, reconnecting and running it again while the
        connection is what fails; other errors (refusals of the statement) propagate."""
        tries = Attempts(self._retry, self._rng)
        while True:
            self._cost.calls += 1
            async with self._in_use:
                try:
                    return await work(await self._live())
                except psycopg.Error as error:
                    if not is_lost(error):
                        raise
                    cause = self._cause(error)
                await self._drop()  # whatever state it was left in, the next try starts afresh
            delay = tries.next_delay()
            if delay is None:
                raise SinkError(f"postgres {self._table}: {tries.gave_up(what, cause)}")
            await asyncio.sleep(delay)

    async def execute(
        self,
        query: sql.SQL | sql.Composed,
        params: Sequence[Any] | None = None,
        what: str = "query",
        *,
        refusals: bool = False,
    ) -> list[Any]:
        """Rows of ``query``; a refusal of the statement is a SinkError, or with
        ``refusals`` the driver's error, for the caller to blame one record."""

        async def run(connection: Connection) -> list[Any]:
            async with connection.cursor() as cursor:
                await cursor.execute(query, params)
                return await cursor.fetchall() if cursor.description else []

        try:
            return await self.retrying(what, run)
        except psycopg.Error as error:
            if refusals:
                raise
            raise SinkError(f"postgres {self._table}: {what}: {self._cause(error)}") from None

    async def locked(self, what: str, statements: Sequence[sql.Composed]) -> None:
        """``statements`` in one transaction holding the table's advisory lock, so shards
        creating or altering the tables at once take turns instead of colliding."""

        async def run(connection: Connection) -> None:
            async with connection.transaction(), connection.cursor() as cursor:
                await cursor.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"fleetsync:{self._table}"]
                )
                for statement in statements:
                    await cursor.execute(statement)

        try:
            await self.retrying(what, run)
        except psycopg.Error as error:
            raise SinkError(f"postgres {self._table}: {what}: {self._cause(error)}") from None
