"""The hand-written programs fleetsync is measured against, fetching the same items from the
same simulator and writing them to the same sink.

- **seed pattern**: seed 000 as written: gather every fetch over one aiohttp session (its
  default connector: 100 connections), then waves of 15 batch writes of 25.
- **raw bound**: the least a program can do: one aiohttp session without a connection cap,
  ``concurrency`` fetch loops, rows handed to one writer thread that commits SQLite
  ``executemany`` batches of 500, overlapping fetch and write. No retries, no mapping
  language, no state: what this machine allows, not a product.

``python -m bench.baselines raw URL COUNT DB CONCURRENCY`` (or ``seed URL COUNT DB``, or
``seed-dynamodb URL COUNT ENDPOINT TABLE``) runs a
baseline as its own process, so it pays an interpreter start and its imports as
``fleetsync run`` does: the headline ratios compare process to process.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

Row = tuple[str, float, str]


def item_url(base: str, i: int) -> str:
    """The URL bench.common's manifest builds for item i: vendor i % 3. Defined here, not
    there, so a baseline run as its own process imports no more than it needs (bench.common
    imports the simulator, httpx and pydantic: ~0.18 s the baseline does not pay)."""
    return f"{base}/vendors/v{i % 3}/plants/p-{i}/realtime"


def _create_table(connection: sqlite3.Connection) -> None:
    connection.execute("CREATE TABLE plants (key TEXT PRIMARY KEY, power REAL, updated_at TEXT)")


# --- seed 000's pattern ----------------------------------------------------------------------


async def _fetch_all(base: str, count: int) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:

        async def fetch(i: int) -> dict[str, Any]:
            async with session.get(item_url(base, i)) as r:
                data: dict[str, Any] = (await r.json())["data"]
                return data

        return await asyncio.gather(*(fetch(i) for i in range(count)))


def seed_sqlite(base: str, count: int, db: Path) -> None:
    results = asyncio.run(_fetch_all(base, count))
    connection = sqlite3.connect(db)
    _create_table(connection)
    batches = [results[i : i + 25] for i in range(0, len(results), 25)]
    for wave in range(0, len(batches), 15):
        for batch in batches[wave : wave + 15]:
            with connection:
                connection.executemany(
                    "INSERT OR REPLACE INTO plants VALUES (?, ?, ?)",
                    [(d["id"], d["power"], d["updated_at"]) for d in batch],
                )
    connection.close()


def seed_dynamodb(base: str, count: int, endpoint: str, table: str) -> None:
    import boto3

    results = asyncio.run(_fetch_all(base, count))
    client = boto3.client(
        "dynamodb", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="y",
    )  # fmt: skip

    def write(batch: list[dict[str, Any]]) -> None:
        items: list[Any] = [
            {"PutRequest": {"Item": {"PK": {"S": f"PLANT#{d['id']}"}, "power": {"N": str(d["power"])},
                                     "updated_at": {"S": d["updated_at"]}}}}
            for d in batch
        ]  # fmt: skip
        while items:
            left = client.batch_write_item(RequestItems={table: items}).get("UnprocessedItems", {})
            items = left.get(table, [])

    batches = [results[i : i + 25] for i in range(0, len(results), 25)]
    with ThreadPoolExecutor(15) as pool:
        for wave in range(0, len(batches), 15):
            list(pool.map(write, batches[wave : wave + 15]))


# --- the raw bound ---------------------------------------------------------------------------


def _writer(db: Path, rows: queue.Queue[list[Row] | None]) -> None:
    connection = sqlite3.connect(db)
    _create_table(connection)
    while (batch := rows.get()) is not None:
        with connection:
            connection.executemany("INSERT OR REPLACE INTO plants VALUES (?, ?, ?)", batch)
    connection.close()


async def _raw(
    base: str, count: int, concurrency: int, rows: queue.Queue[list[Row] | None]
) -> None:
    indices = iter(range(count))
    pending: list[Row] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def loop() -> None:
            nonlocal pending
            for i in indices:
                async with session.get(item_url(base, i)) as r:
                    data = (await r.json())["data"]
                pending.append((data["id"], data["power"], data["updated_at"]))
                if len(pending) >= 500:
                    rows.put(pending)
                    pending = []

        await asyncio.gather(*(loop() for _ in range(min(concurrency, count))))
    if pending:
        rows.put(pending)


def raw_bound(base: str, count: int, db: Path, concurrency: int) -> None:
    rows: queue.Queue[list[Row] | None] = queue.Queue()
    writer = threading.Thread(target=_writer, args=(db, rows))
    writer.start()
    try:
        asyncio.run(_raw(base, count, concurrency, rows))
    finally:
        rows.put(None)
        writer.join()


def raw_command(base: str, count: int, db: Path, concurrency: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.baselines",
        "raw",
        base,
        str(count),
        str(db),
        str(concurrency),
    ]


def seed_command(base: str, count: int, db: Path) -> list[str]:
    return [sys.executable, "-m", "bench.baselines", "seed", base, str(count), str(db)]


def seed_dynamodb_command(base: str, count: int, endpoint: str, table: str) -> list[str]:
    return [sys.executable, "-m", "bench.baselines", "seed-dynamodb", base, str(count),
            endpoint, table]  # fmt: skip


if __name__ == "__main__":
    kind, url, n, path, *width = sys.argv[1:]
    if kind == "raw":
        raw_bound(url, int(n), Path(path), int(width[0]))
    elif kind == "seed":
        seed_sqlite(url, int(n), Path(path))
    elif kind == "seed-dynamodb":  # path: the endpoint; width: the table
        seed_dynamodb(url, int(n), path, width[0])
    else:
        raise SystemExit(f"unknown baseline {kind!r}: raw, seed or seed-dynamodb")
