"""The sink an e2e test syncs into, as the target allows (target.py): an SQLite file when
worker pods share this machine's filesystem, else a table of a PostgreSQL server they reach
over the network. Each gives the SyncJob's `spec.sink` and reads back what landed."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fleetsync.worker.secrets import env_name

__all__ = ["PostgresStore", "SqliteStore", "Store"]


class Store(Protocol):
    def sink(self) -> dict[str, Any]: ...

    def rows(self) -> int: ...

    def synced_keys(self) -> list[str]: ...

    def dead_letters(self) -> int: ...

    def cli_env(self) -> dict[str, str]:
        """What `fleetsync retry-failed`, run here, needs to open the sink."""
        ...


class _Readback:
    """What landed, read the same way from either store (both name a table ``table``)."""

    table: str

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def rows(self) -> int:
        found = self._query(f"SELECT count(*) FROM {self.table}")
        return int(found[0][0]) if found else 0

    def synced_keys(self) -> list[str]:
        return [str(k) for (k,) in self._query(f"SELECT key FROM {self.table}")]

    def dead_letters(self) -> int:
        found = self._query(f"SELECT count(*) FROM {self.table}_dead_letters")
        return int(found[0][0]) if found else 0


@dataclass
class SqliteStore(_Readback):
    path: Path
    table: str = "plants"

    def sink(self) -> dict[str, Any]:
        return {"sqlite": {"path": str(self.path), "table": self.table}}

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        try:
            with sqlite3.connect(self.path, timeout=5) as connection:
                return list(connection.execute(sql).fetchall())
        except sqlite3.OperationalError:
            return []  # table not created yet

    def cli_env(self) -> dict[str, str]:
        return {}


@dataclass
class PostgresStore(_Readback):
    dsn: str
    table: str
    secret: str  # a Secret in the test namespace holding the DSN under key "dsn"

    def sink(self) -> dict[str, Any]:
        return {"postgres": {"dsnSecretRef": {"name": self.secret, "key": "dsn"},
                             "table": self.table}}  # fmt: skip

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with (
            contextlib.suppress(psycopg.errors.UndefinedTable),
            psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as connection,
        ):
            return list(connection.execute(sql.encode()).fetchall())
        return []  # table not created yet

    def cli_env(self) -> dict[str, str]:
        return {env_name(self.secret, "dsn"): self.dsn}
