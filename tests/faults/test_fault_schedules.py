"""No item lost, hidden or fetched twice, whatever breaks: fault schedules drawn by hypothesis.

Each schedule runs ``fleetsync run`` as a user does, against the real vendor simulator and a
real sink (SQLite, PostgreSQL or the DynamoDB-protocol server), while things break: vendor
connections reset or stall, DynamoDB throttles or hands back UnprocessedItems, PostgreSQL
drops every connection (a restart, as its clients see it), shard processes are killed with
SIGKILL, or the whole ``fleetsync run`` is killed and started again. After every schedule:

- the books balance: ``total = synced + unchanged + fresh + stale + failed``, nothing remains;
- every item of the fleet is in the sink or in the dead letters, never both, never twice;
- every row holds exactly what the vendor served (no torn or mixed-up payloads);
- dead letters = failed;
- a kill costs at most one sink batch (plus the requests in flight) of fetches again.

CI runs a fixed, derandomized set (``FLEETSYNC_FAULT_EXAMPLES``, default 6); ``make soak``
runs many more. Figures per schedule go to ``$FLEETSYNC_FAULT_REPORT`` (JSON lines) if set.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import yaml
from chaos import Faults
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import VENDORS, Servers

from fleetsync.simulator import expected_payload

pytestmark = pytest.mark.integration
FLEETSYNC = [sys.executable, "-m", "fleetsync"]
EXAMPLES = int(os.environ.get("FLEETSYNC_FAULT_EXAMPLES", "6"))
CONCURRENCY = 16
BATCH = {"sqlite": 500, "postgres": 500, "dynamodb": 25}
RUN_TIMEOUT = 150.0


@dataclass
class Schedule:
    sink: str
    count: int
    shards: int
    vendor_faults: Faults
    ddb_throttle: float = 0.0
    ddb_unprocessed: float = 0.0
    ddb_resets: float = 0.0
    pg_severs: list[float] = field(default_factory=list)  # seconds after start
    kills: list[tuple[float, int]] = field(default_factory=list)  # (at, shard); -1: the run


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    sink = draw(st.sampled_from(["sqlite", "postgres", "dynamodb"]))
    shards = draw(st.integers(1, 3))
    vendor = Faults(
        reset_rate=draw(st.sampled_from([0.0, 0.01, 0.05])),
        stall_rate=draw(st.sampled_from([0.0, 0.01])),
        stall_seconds=2.5,
    )
    at = st.floats(0.5, 4.0, allow_nan=False).map(lambda t: round(t, 2))
    target = st.just(-1) if shards == 1 else st.integers(0, shards - 1)
    schedule = Schedule(
        sink=sink,
        count=draw(st.sampled_from([1000, 3000])),
        shards=shards,
        vendor_faults=vendor,
        kills=sorted(draw(st.lists(st.tuples(at, target), max_size=2))),
    )
    if sink == "dynamodb":
        schedule.ddb_throttle = draw(st.sampled_from([0.0, 0.1, 0.3]))
        schedule.ddb_unprocessed = draw(st.sampled_from([0.0, 0.5]))
        schedule.ddb_resets = draw(st.sampled_from([0.0, 0.05]))
    if sink == "postgres":
        schedule.pg_severs = sorted(draw(st.lists(at, max_size=2)))
    return schedule


def manifest(servers: Servers, schedule: Schedule, name: str, tmp: Path) -> dict[str, Any]:
    sink: dict[str, Any]
    if schedule.sink == "sqlite":
        sink = {"sqlite": {"path": str(tmp / "fleet.db"), "table": "plants"}}
    elif schedule.sink == "postgres":
        sink = {"postgres": {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "table": name}}
    else:
        sink = {
            "dynamodb": {
                "table": name, "region": "us-east-1", "createTable": True,
                "endpointUrl": servers.dynamodb_url_via_chaos(), "key": {"PK": "PLANT#{id}"},
            }
        }  # fmt: skip
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": name},
        "spec": {
            "fleet": {
                "inventory": {
                    "generate": {
                        "count": schedule.count,
                        "idTemplate": "p-{i}",
                        "template": {"vendor": "{i%" + str(len(VENDORS)) + "}"},
                    }
                }
            },
            "source": {
                "http": {"url": "{vendor.baseUrl}/plants/{id}/realtime", "timeoutSeconds": 2},
                "vendors": {
                    "by": "vendor",
                    "items": {
                        str(i): {"baseUrl": servers.vendor_url(v)} for i, v in enumerate(VENDORS)
                    },
                },
                "retry": {"maxAttempts": 6, "backoff": {"baseSeconds": 0.02, "maxSeconds": 0.3}},
                "concurrency": {"mode": "fixed", "initial": CONCURRENCY, "max": CONCURRENCY},
                "mapping": {"power": "$.data.power", "updated_at": "$.data.updated_at"},
            },
            "sink": sink,
        },
    }


def _is_our_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"fleetsync" in cmdline and (b"worker" in cmdline or b"run" in cmdline)


def _run_once(
    servers: Servers, schedule: Schedule, path: Path, state: Path, secrets: Path, name: str,
    *, kill_run_at: float | None,
) -> tuple[subprocess.CompletedProcess[str] | None, list[str]]:  # fmt: skip
    """Run ``fleetsync run`` with the schedule's events; None when the run itself was killed."""
    command = [*FLEETSYNC, "run", str(path), "--output", "json", "--state-dir", str(state),
               "--secrets-dir", str(secrets), "--shards", str(schedule.shards)]  # fmt: skip
    # The DynamoDB-protocol server takes any credentials; a user's would come from the
    # environment (or the sink's credentialsSecretRef) the same way.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    started = time.monotonic()
    events: list[tuple[float, str, int]] = [(t, "sever", 0) for t in schedule.pg_severs]
    events += [(t, "kill", s) for t, s in schedule.kills if s >= 0]
    if kill_run_at is not None:
        events.append((kill_run_at, "kill-run", -1))
    done: list[str] = []
    for at, what, shard in sorted(events):
        while process.poll() is None and time.monotonic() - started < at:
            time.sleep(0.02)
        if process.poll() is not None:
            break
        if what == "sever":
            servers.sever_postgres()
            done.append(f"sever@{at}")
        elif what == "kill-run":
            process.kill()
            process.communicate(timeout=30)
            done.append(f"kill-run@{at}")
            return None, done
        else:
            pid_file = state / "runs" / name / f"shard-{shard}.pid"
            if pid_file.exists():
                pid = int(pid_file.read_text())
                if _is_our_worker(pid):
                    os.kill(pid, signal.SIGKILL)
                    done.append(f"kill-shard{shard}@{at}")
    stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), done


def read_sink(servers: Servers, schedule: Schedule, name: str, tmp: Path) -> tuple[
    list[tuple[str, Any, Any]], list[str]
]:  # fmt: skip
    """(rows as (key, power, updated_at), dead-letter keys) straight from the store."""
    if schedule.sink == "sqlite":
        with sqlite3.connect(tmp / "fleet.db") as db:
            rows = db.execute("SELECT key, power, updated_at FROM plants").fetchall()
            letters = [k for (k,) in db.execute("SELECT key FROM plants_dead_letters")]
        return rows, letters
    if schedule.sink == "postgres":
        with psycopg.connect(servers.postgres_dsn) as db:
            rows = db.execute(f'SELECT key, power, updated_at FROM "{name}"').fetchall()
            letters = [
                k for (k,) in db.execute(f'SELECT key FROM "{name}_dead_letters"').fetchall()
            ]
        return [(k, float(p), u) for k, p, u in rows], letters
    client = boto3.client(
        "dynamodb", endpoint_url=servers.dynamodb_url, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=name):
        items += page["Items"]
    rows, letters = [], []
    for item in items:
        pk = item["PK"]["S"]
        if pk.startswith("DLQ#"):
            letters.append(pk.split("#")[2])
        else:
            rows.append((pk.removeprefix("PLANT#"), float(item["power"]["N"]),
                         item["updated_at"]["S"]))  # fmt: skip
    return rows, letters


_counter = iter(range(10**6))


@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(schedule=schedules())
def test_no_item_is_lost_hidden_or_fetched_twice(
    servers: Servers, schedule: Schedule, tmp_path_factory: pytest.TempPathFactory
) -> None:
    n = next(_counter)
    name = f"faults{n}"
    tmp = tmp_path_factory.mktemp(name)
    secrets = tmp / "secrets"
    (secrets / "pg").mkdir(parents=True)
    (secrets / "pg" / "dsn").write_text(servers.postgres_dsn_via_chaos())
    path = tmp / "syncjob.yaml"
    path.write_text(yaml.safe_dump(manifest(servers, schedule, name, tmp)))
    ddb_faults = Faults(reset_rate=schedule.ddb_resets)
    servers.set_faults(
        vendor=schedule.vendor_faults, postgres=Faults(), dynamodb=ddb_faults,
        ddb_throttle=schedule.ddb_throttle, ddb_unprocessed=schedule.ddb_unprocessed, seed=n,
    )  # fmt: skip
    servers.sim.reset()
    run_kills = [t for t, s in schedule.kills if s < 0]
    events: list[str] = []
    try:
        out, done = _run_once(
            servers, schedule, path, tmp / "state", secrets, name,
            kill_run_at=run_kills[0] if run_kills else None,
        )  # fmt: skip
        events += done
        if out is None:  # the run itself was killed: a user starts it again
            out, done = _run_once(
                servers, schedule, path, tmp / "state", secrets, name, kill_run_at=None
            )
            events += done
        assert out is not None
    finally:
        servers.set_faults(
            vendor=Faults(), postgres=Faults(), dynamodb=Faults(), ddb_throttle=0.0,
            ddb_unprocessed=0.0, seed=0,
        )  # fmt: skip
    context = f"schedule={schedule} events={events}\nstderr:\n{out.stderr[-3000:]}"
    assert out.returncode in (0, 2), context
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    items = summary["items"]
    settled = items["synced"] + items["unchanged"] + items["fresh"] + items["stale"]
    assert items["total"] == schedule.count, context
    assert settled + items["failed"] == items["total"] and items["remaining"] == 0, (
        f"books do not balance: {items}\n{context}"
    )
    rows, letters = read_sink(servers, schedule, name, tmp)
    keys = [k for k, _, _ in rows]
    assert len(keys) == len(set(keys)), f"duplicate rows\n{context}"
    fleet = {f"p-{i}" for i in range(schedule.count)}
    assert set(keys) | set(letters) == fleet, (
        f"lost: {sorted(fleet - set(keys) - set(letters))[:10]}\n{context}"
    )
    assert not set(keys) & set(letters), f"both synced and dead: {set(keys) & set(letters)}"
    assert len(set(letters)) == items["failed"], f"dead letters {len(set(letters))}\n{context}"
    assert len(keys) == settled, f"{len(keys)} rows for {settled} settled\n{context}"
    for key, power, updated_at in rows:
        i = int(key.removeprefix("p-"))
        data = expected_payload(VENDORS[i % len(VENDORS)], key)["data"]
        assert (power, updated_at) == (data["power"], data["updated_at"]), key
    calls = sum(servers.sim.stats()["vendors"][v]["total"] for v in VENDORS)
    kills = sum(1 for e in events if e.startswith("kill"))
    # Each table is new, so an item fetched again after its first fetch was written counts
    # as unchanged: per kill, at most one sink batch plus what was in flight.
    refetch_bound = kills * (BATCH[schedule.sink] + CONCURRENCY * len(VENDORS))
    assert items["unchanged"] <= refetch_bound, f"re-fetched {items['unchanged']}\n{context}"
    faults_on_vendor = schedule.vendor_faults.reset_rate or schedule.vendor_faults.stall_rate
    if not faults_on_vendor:
        bound = schedule.count + refetch_bound
        assert calls <= bound, f"{calls} vendor calls for {schedule.count} items\n{context}"
    report = os.environ.get("FLEETSYNC_FAULT_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps({
                "schedule": asdict(schedule), "events": events, "items": items,
                "vendorCalls": calls, "kills": kills, "phase": summary["phase"],
            }, default=str) + "\n")  # fmt: skip
