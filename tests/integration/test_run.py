"""`fleetsync run` end to end: the CLI as a user runs it, the vendor simulator in its own
process, a SQLite sink on disk. What a user sees: exit codes, the JSON summary, the rows."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetsync.simulator import SimulatorConfig, SimulatorProcess, VendorConfig, expected_payload
from fleetsync.simulator.server import is_malformed

pytestmark = pytest.mark.integration
FLEETSYNC = [sys.executable, "-m", "fleetsync"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    fast = {"latency": {"p50Ms": 2, "p99Ms": 10}}
    config = SimulatorConfig(
        vendors={
            "sungrow": VendorConfig.model_validate(fast),
            "huawei": VendorConfig.model_validate(fast),
            "limited": VendorConfig.model_validate(
                {"latency": {"p50Ms": 2, "p99Ms": 10}, "rateLimit": {"requestsPerSecond": 25}}
            ),
            "slow": VendorConfig.model_validate({"latency": {"p50Ms": 30, "p99Ms": 60}}),
            "broken": VendorConfig.model_validate({**fast, "malformedRate": 0.05}),
            "listing": VendorConfig.model_validate(
                {**fast, "inventory": {"count": 25, "pageSize": 10}}
            ),
        }
    )
    with SimulatorProcess(config) as simulator:
        yield simulator


def manifest(
    sim: SimulatorProcess, db: Path, *, count: int, vendors: tuple[str, ...], name: str = "plants",
    spec: dict[str, Any] | None = None, source: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": name},
        "spec": {
            "fleet": {
                "inventory": {
                    "generate": {
                        "count": count,
                        "idTemplate": "p-{i}",
                        "template": {"vendor": "{i%" + str(len(vendors)) + "}"},
                    }
                }
            },
            "source": {
                "http": {"url": "{vendor.baseUrl}/plants/{id}/realtime"},
                "vendors": {
                    "by": "vendor",
                    "items": {
                        str(i): {"baseUrl": f"{sim.url}/vendors/{v}"} for i, v in enumerate(vendors)
                    },
                },
                "retry": {"maxAttempts": 2, "backoff": {"baseSeconds": 0.01, "maxSeconds": 0.05}},
                "mapping": {"power": "$.data.power", "updated_at": "$.data.updated_at"},
                **(source or {}),
            },
            "sink": {"sqlite": {"path": str(db), "table": "plants"}},
            **(spec or {}),
        },
    }
    return body


def run(
    tmp: Path, body: dict[str, Any], *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    path = tmp / "syncjob.yaml"
    path.write_text(yaml.safe_dump(body))
    return subprocess.run(
        [*FLEETSYNC, "run", str(path), "--output", "json", "--state-dir", str(tmp / "state"),
         *args],
        check=False, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def summary(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def stored(db: Path) -> dict[str, tuple[Any, Any]]:
    with sqlite3.connect(db) as connection:
        return {
            k: (p, u) for k, p, u in connection.execute("SELECT key, power, updated_at FROM plants")
        }


@pytest.mark.parametrize("shards", ["1", "3"], ids=["in-process", "shards-sharing-processes"])
def test_an_http_inventory_is_listed_and_every_item_synced(
    sim: SimulatorProcess, tmp_path: Path, shards: str
) -> None:
    # The inventory's client is made only when an HTTP inventory asks for it: the template
    # check and every shard (in the runner's process, or several in a worker process) list
    # the three pages themselves.
    db = tmp_path / "listed.db"
    body = manifest(sim, db, count=1, vendors=("listing",))
    body["spec"]["fleet"]["inventory"] = {"http": {"url": f"{sim.url}/vendors/listing/inventory"}}
    body["spec"]["source"]["http"] = {"url": f"{sim.url}/vendors/listing/plants/{{id}}/realtime"}
    del body["spec"]["source"]["vendors"]
    out = run(tmp_path, body, "--shards", shards, "--processes", "2")
    assert out.returncode == 0, out.stderr
    assert summary(out)["items"]["synced"] == 25
    assert set(stored(db)) == {f"listing-{i}" for i in range(25)}


def test_a_run_syncs_exactly_what_the_vendors_serve(sim: SimulatorProcess, tmp_path: Path) -> None:
    db = tmp_path / "plants.db"
    out = run(tmp_path, manifest(sim, db, count=3000, vendors=("sungrow", "huawei")))
    assert out.returncode == 0, out.stderr
    result = summary(out)
    assert result["phase"] == "Succeeded"
    assert result["items"]["total"] == 3000 and result["items"]["synced"] == 3000
    assert {"durationSeconds", "cost", "vendors", "failedItems"} <= result.keys()
    rows = stored(db)
    assert len(rows) == 3000
    for i in (0, 1, 1499, 2999):
        vendor = ("sungrow", "huawei")[i % 2]
        data = expected_payload(vendor, f"p-{i}")["data"]
        assert rows[f"p-{i}"] == (data["power"], data["updated_at"])
    # A second run finds nothing changed and writes nothing.
    again = summary(run(tmp_path, manifest(sim, db, count=3000, vendors=("sungrow", "huawei"))))
    assert again["items"]["unchanged"] == 3000 and again["cost"]["writeUnits"] == 0


@pytest.mark.parametrize(
    "processes", [(), ("--processes", "2")], ids=["in-this-process", "worker-processes"]
)
def test_eight_shards_hold_a_shared_25_rps_limit(
    sim: SimulatorProcess, tmp_path: Path, processes: tuple[str, ...]
) -> None:
    # 25 req/s is far below one process's pace: by default the eight shards run in the
    # runner's own process (no worker starts); with --processes, in two worker processes.
    sim.reset()
    body = manifest(
        sim, tmp_path / "l.db", count=300, vendors=("limited",),
        source={"rateLimit": {"requestsPerSecond": 25}},
    )  # fmt: skip
    out = run(tmp_path, body, "--shards", "8", *processes)
    assert out.returncode == 0, out.stderr
    logs = sorted(p.name for p in (tmp_path / "state" / "runs" / "plants").glob("shard*.log"))
    assert logs == ([] if not processes else ["shards-0-2-4-6.log", "shards-1-3-5-7.log"])
    assert summary(out)["items"]["synced"] == 300
    stats = sim.stats()["vendors"]["limited"]
    assert stats["total"] >= 300
    assert stats["maxOfferedPerSecond"] <= 25, stats["perSecond"]
    assert stats["byStatus"].get("429", 0) == 0


def test_a_shard_killed_with_sigkill_resumes_and_syncs_each_item_once(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    sim.reset()
    db = tmp_path / "k.db"
    body = manifest(
        sim,
        db,
        count=2000,
        vendors=("slow",),
        source={"concurrency": {"mode": "fixed", "initial": 8, "min": 1, "max": 8}},
    )
    path = tmp_path / "syncjob.yaml"
    path.write_text(yaml.safe_dump(body))
    process = subprocess.Popen(
        [*FLEETSYNC, "run", str(path), "--output", "json", "--state-dir", str(tmp_path / "state"),
         "--shards", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pid_file = tmp_path / "state" / "runs" / "plants" / "shard-0.pid"
    deadline = time.monotonic() + 60
    killed = False
    while time.monotonic() < deadline and not killed:
        time.sleep(0.2)
        if pid_file.exists() and db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as connection:
                    (n,) = connection.execute("SELECT count(*) FROM plants").fetchone()
            except sqlite3.OperationalError:
                continue
            if n >= 300:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                killed = True
    assert killed, "the shard never got going"
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["phase"] == "Succeeded"
    assert len(stored(db)) == 2000
    assert result["items"]["synced"] + result["items"]["unchanged"] == 2000
    # Resumed from its last reported checkpoint (reports go every second): what was in
    # flight or finished since is fetched again, at most one sink batch (500) of items.
    fetched = sim.stats()["vendors"]["slow"]["total"]
    assert 2000 <= fetched <= 2000 + 500, fetched


def test_malformed_payloads_fail_only_their_items_and_can_be_retried(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    db = tmp_path / "m.db"
    out = run(tmp_path, manifest(sim, db, count=400, vendors=("broken",)))
    assert out.returncode == 2, out.stderr  # PartiallySucceeded
    result = summary(out)
    bad = {f"p-{i}" for i in range(400) if is_malformed("broken", f"p-{i}", 0.05)}
    assert result["items"]["failed"] == len(bad) > 0
    assert result["items"]["synced"] == 400 - len(bad)
    sample = result["failedItems"]["sample"]
    assert 0 < len(sample) <= 20
    assert {s["key"] for s in sample} <= bad
    assert all(s["reason"] for s in sample)
    assert set(stored(db)) == {f"p-{i}" for i in range(400)} - bad
    letters = subprocess.run(
        [*FLEETSYNC, "dead-letters", str(tmp_path / "syncjob.yaml")],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert letters.returncode == 0, letters.stderr
    rows = [json.loads(line) for line in letters.stdout.splitlines() if line.strip()]
    assert {row["key"] for row in rows} == bad
    assert all(row["reason"] and row["attempts"] >= 1 for row in rows)


@pytest.mark.parametrize(
    ("percent", "code", "phase"), [(1, 1, "Failed"), (50, 2, "PartiallySucceeded")]
)
def test_max_item_failure_percent_decides_the_phase_of_a_local_run(
    sim: SimulatorProcess, tmp_path: Path, percent: int, code: int, phase: str
) -> None:
    # ~5 % of the broken vendor's payloads are malformed: over 1 % fails the run, under 50 %
    # does not, whatever the count limit (1,000) says.
    db = tmp_path / "p.db"
    policy = {"deadLetter": {"maxItemFailures": 1000, "maxItemFailurePercent": percent}}
    out = run(tmp_path, manifest(sim, db, count=400, vendors=("broken",), spec=policy))
    assert out.returncode == code, out.stderr[-2000:]
    result = summary(out)
    assert result["phase"] == phase
    assert 0 < result["items"]["failed"] < 40


def test_an_invalid_manifest_exits_64_naming_the_field(
    tmp_path: Path, sim: SimulatorProcess
) -> None:
    body = manifest(
        sim,
        tmp_path / "x.db",
        count=10,
        vendors=("sungrow",),
        source={"rateLimit": {"requestsPerSecond": 0}},
    )
    out = run(tmp_path, body)
    assert out.returncode == 64
    assert "spec.source.rateLimit.requestsPerSecond" in out.stderr
    assert "Traceback" not in out.stderr


def test_requests_never_leave_allowed_hosts_and_secrets_never_print(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    canary = "canary-s3cr3t-value-7f2a"
    secrets_dir = tmp_path / "secrets" / "vendor-keys"
    secrets_dir.mkdir(parents=True)
    (secrets_dir / "token").write_text(canary)
    # A second loopback server that must never see a request, let alone the credential.
    with SimulatorProcess(SimulatorConfig(vendors={"evil": VendorConfig()})) as evil:
        body = manifest(
            sim, tmp_path / "s.db", count=20, vendors=("sungrow", "evil"),
            source={"http": {"url": "{vendor.baseUrl}/plants/{id}/realtime",
                             "auth": {"secretRef": {"name": "vendor-keys", "key": "token"}},
                             "allowedHosts": ["127.0.0.1:" + sim.url.rsplit(":", 1)[1]]}},
        )  # fmt: skip
        body["spec"]["source"]["vendors"]["items"]["1"]["baseUrl"] = (
            evil.url.replace("127.0.0.1", "localhost") + "/vendors/evil"
        )
        out = run(tmp_path, body, "--secrets-dir", str(tmp_path / "secrets"))
        assert evil.stats()["vendors"]["evil"]["total"] == 0
    assert out.returncode == 2, out.stderr
    result = summary(out)
    assert result["items"]["failed"] == 10
    assert any(
        "allowedHosts" in s["reason"] or "not allowed" in s["reason"]
        for s in result["failedItems"]["sample"]
    )
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "state").rglob("*.log"))
    assert canary not in out.stdout + out.stderr + logs
    assert sim.stats()["vendors"]["sungrow"]["authorizationSeen"]  # the real vendor got it
