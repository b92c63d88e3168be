"""The DDL of the PostgreSQL sink: its records table, conflict index and dead letters table.

Pure (statements only, no connection) so the sink module stays about writing records;
the sink runs these under an advisory lock (see :mod:`fleetsync.sinks.postgres`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from psycopg import sql

__all__ = ["BOOKKEEPING", "ident", "table_statements"]

BOOKKEEPING = ("key", "_fs_hash", "_fs_synced_at")


def ident(name: str) -> sql.Identifier:
    """``schema.table`` or ``table`` as a quoted identifier."""
    return sql.Identifier(*name.split("."))


def table_statements(
    table: str, conflict_key: Sequence[str], column_types: Mapping[str, str]
) -> list[sql.Composed]:
    """CREATE … IF NOT EXISTS for the records table, its indexes and the dead letters."""
    t = ident(table)
    extra = [c for c in conflict_key if c not in BOOKKEEPING]
    definitions = [
        sql.SQL("key text NOT NULL"),
        sql.SQL("_fs_hash text"),
        sql.SQL("_fs_synced_at double precision"),
        *(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(column_types.get(c, "text")))
            for c in extra
        ),
    ]
    short = table.rsplit(".", maxsplit=1)[-1]
    statements: list[sql.Composed] = [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(t, sql.SQL(", ").join(definitions)),
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(short + "_fs_conflict"),
            t,
            sql.SQL(", ").join(map(sql.Identifier, conflict_key)),
        ),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (run text NOT NULL, key text NOT NULL, "
            "member text NOT NULL DEFAULT '', reason text NOT NULL, "
            "attempts integer NOT NULL, item jsonb NOT NULL, "
            "failed_at double precision NOT NULL, PRIMARY KEY (run, key, member))"
        ).format(ident(table + "_dead_letters")),
    ]
    if list(conflict_key) != ["key"]:
        statements.append(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (key)").format(
                sql.Identifier(short + "_fs_key"), t
            )
        )
    return statements
