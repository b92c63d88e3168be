"""No item lost, hidden or fetched twice (issue 12), end to end: ``fleetsync run`` as a user
runs it, against the project's simulator (or a tiny vendor served here when the simulator
cannot say it), SQLite on disk and a DynamoDB-protocol server (moto).

After every run: ``total = synced + unchanged + fresh + stale + failed``, the sink holds one
row per key of every non-failed item, and one dead letter per failed item.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from aiohttp import web

from fleetsync.simulator import SimulatorConfig, SimulatorProcess, VendorConfig

pytestmark = pytest.mark.integration
FLEETSYNC = [sys.executable, "-m", "fleetsync"]
AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
NAN_ITEM = "p-57"
OUTCOMES = ("synced", "unchanged", "fresh", "stale", "failed")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    config = SimulatorConfig(
        vendors={
            "broken": VendorConfig.model_validate(
                {"latency": {"p50Ms": 2, "p99Ms": 10}, "malformedRate": 0.05}
            ),
            "steady": VendorConfig.model_validate({"latency": {"p50Ms": 15, "p99Ms": 30}}),
        }
    )
    with SimulatorProcess(config) as simulator:
        yield simulator


@pytest.fixture
async def nan_vendor() -> AsyncIterator[str]:
    """Answers ``"power": NaN`` (which Python's json accepts) for one plant."""

    async def plant(request: web.Request) -> web.Response:
        item = request.match_info["id"]
        n = int(item.split("-")[1])
        power = "NaN" if item == NAN_ITEM else str(n * 1.5)
        return web.Response(
            body=f'{{"data": {{"power": {power}}}}}', content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/plants/{id}", plant)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def job(name: str, url: str, count: int, sink: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": name},
        "spec": {
            "fleet": {"inventory": {"generate": {"count": count, "idTemplate": "p-{i}"}}},
            "source": {
                "http": {"url": url},
                "concurrency": {"mode": "fixed", "initial": 4, "min": 1, "max": 4},
                "retry": {"maxAttempts": 2, "backoff": {"baseSeconds": 0.01, "maxSeconds": 0.05}},
                "mapping": {"power": "$.data.power"},
            },
            "sink": sink,
            "deadLetter": {"maxItemFailures": 1000},
        },
    }


def dynamodb_sink(endpoint: str, table: str) -> dict[str, Any]:
    return {
        "dynamodb": {
            "table": table,
            "region": "us-east-1",
            "key": {"PK": "PLANT#{id}"},
            "endpointUrl": endpoint,
            "createTable": True,
        }
    }


def write_manifest(tmp: Path, body: dict[str, Any]) -> Path:
    path = tmp / "syncjob.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def summary_of(stdout: str) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    assert lines, "no summary printed"
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def assert_invariant(items: dict[str, int], rows: int, letters: int) -> None:
    assert items["total"] == sum(items.get(k, 0) for k in OUTCOMES), items
    assert rows == items["total"] - items.get("failed", 0), (rows, items)
    assert letters == items.get("failed", 0), (letters, items)


def dynamodb_rows(endpoint: str, table: str) -> tuple[set[str], set[str]]:
    """(record keys, dead-lettered keys) in the table."""
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1", **{
        "aws_access_key_id": "test", "aws_secret_access_key": "test"})  # fmt: skip
    records, letters = set(), set()
    for page in client.get_paginator("scan").paginate(TableName=table):
        for row in page["Items"]:
            pk = row["PK"]["S"]
            if pk.startswith("DLQ#"):
                letters.add(row["_fs_key"]["S"])
            else:
                records.add(pk.removeprefix("PLANT#"))
    return records, letters


async def test_a_value_dynamodb_cannot_store_fails_that_item_alone(
    nan_vendor: str, dynamodb_endpoint: str, tmp_path: Path
) -> None:
    body = job("nan", nan_vendor + "/plants/{id}", 120, dynamodb_sink(dynamodb_endpoint, "nan"))
    path = write_manifest(tmp_path, body)
    process = await asyncio.create_subprocess_exec(
        *FLEETSYNC, "run", str(path), "--output", "json", "--state-dir", str(tmp_path / "s"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **AWS},
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=180)
    summary = summary_of(stdout.decode())
    items = summary["items"]
    assert items["total"] == 120 and items["failed"] == 1 and items["synced"] == 119, stderr
    assert summary["phase"] != "Succeeded"  # one item failed: never a clean success
    (failed,) = summary["failedItems"]["sample"]
    assert failed["key"] == NAN_ITEM and failed["reason"]
    records, letters = dynamodb_rows(dynamodb_endpoint, "nan")
    assert records == {f"p-{i}" for i in range(120)} - {NAN_ITEM}
    assert letters == {NAN_ITEM}
    assert_invariant(items, len(records), len(letters))


def test_the_books_balance_with_malformed_payloads(sim: SimulatorProcess, tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    url = f"{sim.url}/vendors/broken/plants/{{id}}/realtime"
    body = job("books", url, 1000, {"sqlite": {"path": str(db), "table": "plants"}})
    out = subprocess.run(
        [*FLEETSYNC, "run", str(write_manifest(tmp_path, body)), "--output", "json",
         "--state-dir", str(tmp_path / "s")],
        check=False, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    items = summary_of(out.stdout)["items"]
    assert items["failed"] > 0, items  # the simulator served some malformed payloads
    with sqlite3.connect(db) as connection:
        (rows,) = connection.execute("SELECT count(DISTINCT key) FROM plants").fetchone()
        (letters,) = connection.execute(
            "SELECT count(*) FROM plants_dead_letters WHERE run = 'books'"
        ).fetchone()
    assert_invariant(items, rows, letters)


@pytest.mark.parametrize("processes", [2, 1], ids=["a-process-per-shard", "shards-share-one"])
def test_a_killed_worker_refetches_at_most_one_sink_batch(
    sim: SimulatorProcess, dynamodb_endpoint: str, tmp_path: Path, processes: int
) -> None:
    """Two shards, in a process each or sharing one; shard 0's process is SIGKILLed mid-run
    and restarted by ``fleetsync run`` with the shards it had not finished, from their last
    checkpoints. Every vendor call beyond one per item is a re-fetch: at most one sink
    batch per shard the kill interrupted."""
    count, batch = 1200, 25  # DynamoDB batches of 25; vendor concurrency 4 < 25
    sim.reset()
    table = f"kill{processes}"  # one table per case: the DynamoDB server outlives a test
    url = f"{sim.url}/vendors/steady/plants/{{id}}/realtime"
    body = job("kill", url, count, dynamodb_sink(dynamodb_endpoint, table))
    body["spec"]["sink"]["dynamodb"]["createTable"] = False
    boto3.client("dynamodb", endpoint_url=dynamodb_endpoint, region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test").create_table(
        TableName=table, KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )  # fmt: skip
    state = tmp_path / "s"
    runner = subprocess.Popen(
        [*FLEETSYNC, "run", str(write_manifest(tmp_path, body)), "--output", "json",
         "--state-dir", str(state), "--shards", "2", "--processes", str(processes)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **AWS},
    )  # fmt: skip
    pid_file = state / "runs" / "kill" / "shard-0.pid"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if pid_file.exists() and sim.stats()["vendors"]["steady"]["total"] >= 400:
            break
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    try:
        stdout, stderr = runner.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        runner.kill()  # its shard workers see their coordinator vanish and stop
        runner.communicate()
        logs = {p.name: p.read_text()[-2000:] for p in (state / "runs" / "kill").glob("*.log")}
        pytest.fail(f"the run did not finish; logs: {logs}")
    summary = summary_of(stdout)
    killed = {"0": 1} if processes == 2 else {"0": 1, "1": 1}
    assert summary["restarts"] == killed, (summary["restarts"], stderr)
    items = summary["items"]
    # Items written but not yet in a checkpoint are fetched again and found unchanged.
    assert items["total"] == count and items["synced"] + items["unchanged"] == count, items
    calls = sim.stats()["vendors"]["steady"]["total"]
    refetched = calls - count
    print(f"vendor calls {calls} for {count} items: {refetched} re-fetched after one kill")
    assert 0 <= refetched <= batch * len(killed), refetched
    records, letters = dynamodb_rows(dynamodb_endpoint, table)
    assert records == {f"p-{i}" for i in range(count)}
    assert_invariant(items, len(records), len(letters))
