"""OAuth2 client credentials against the simulator, and a worker's SIGTERM exit code."""

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

from fleetsync.simulator import SimulatorConfig, SimulatorProcess, VendorConfig

pytestmark = pytest.mark.integration
CLIENT_SECRET = "oauth-canary-7d1e"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    oauth = {"clientId": "fleet", "clientSecret": CLIENT_SECRET}
    config = SimulatorConfig(
        vendors={
            "long": VendorConfig.model_validate({"oauth2": {**oauth, "tokenTtlSeconds": 3600}}),
            "short": VendorConfig.model_validate(
                {"latency": {"p50Ms": 20, "p99Ms": 40}, "oauth2": {**oauth, "tokenTtlSeconds": 1.5}}
            ),
            "slow": VendorConfig.model_validate({"latency": {"p50Ms": 40, "p99Ms": 60}}),
        }
    )
    with SimulatorProcess(config) as simulator:
        yield simulator


def oauth_manifest(sim: SimulatorProcess, vendor: str, db: Path, count: int) -> dict[str, Any]:
    base = f"{sim.url}/vendors/{vendor}"
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": f"oauth-{vendor}"},
        "spec": {
            "fleet": {"inventory": {"generate": {"count": count, "idTemplate": "p-{i}"}}},
            "source": {
                "http": {
                    "url": base + "/plants/{id}",
                    "auth": {
                        "oauth2": {
                            "tokenUrl": base + "/oauth/token",
                            "clientIdRef": {"name": "oauth", "key": "id"},
                            "clientSecretRef": {"name": "oauth", "key": "secret"},
                        }
                    },
                },
                "concurrency": {"mode": "fixed", "initial": 4, "min": 1, "max": 4},
                "mapping": {"power": "$.data.power"},
            },
            "sink": {"sqlite": {"path": str(db), "table": "plants"}},
        },
    }


def run(tmp: Path, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    secrets = tmp / "secrets" / "oauth"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "id").write_text("fleet")
    (secrets / "secret").write_text(CLIENT_SECRET)
    path = tmp / "syncjob.yaml"
    path.write_text(yaml.safe_dump(body))
    return subprocess.run(
        [sys.executable, "-m", "fleetsync", "run", str(path), "--output", "json",
         "--secrets-dir", str(tmp / "secrets"), "--state-dir", str(tmp / "state")],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_oauth2_tokens_are_cached_and_never_logged(sim: SimulatorProcess, tmp_path: Path) -> None:
    out = run(tmp_path, oauth_manifest(sim, "long", tmp_path / "o.db", 300))
    assert out.returncode == 0, out.stderr
    stats = sim.stats()["vendors"]["long"]
    assert stats["byStatus"].get("401", 0) == 0
    assert stats["tokensIssued"] == 1  # one token for 300 requests
    logs = "".join(p.read_text() for p in (tmp_path / "state").rglob("*.log"))
    assert CLIENT_SECRET not in out.stdout + out.stderr + logs


def test_oauth2_tokens_are_refreshed_when_they_expire(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    out = run(tmp_path, oauth_manifest(sim, "short", tmp_path / "s.db", 400))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["items"]["synced"] == 400
    stats = sim.stats()["vendors"]["short"]
    # 400 items at ~20 ms over 4 connections take > 2 s: tokens living 1.5 s are renewed
    # (before expiry, or after a 401) without failing an item.
    assert stats["tokensIssued"] >= 2


def test_a_worker_sent_sigterm_exits_75(sim: SimulatorProcess, tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    body = {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": "sig"},
        "spec": {
            "fleet": {"inventory": {"generate": {"count": 3000, "idTemplate": "p-{i}"}}},
            "source": {
                "http": {"url": f"{sim.url}/vendors/slow/plants/{{id}}"},
                "concurrency": {"mode": "fixed", "initial": 4, "min": 1, "max": 4},
                "mapping": {"power": "$.data.power"},
            },
            "sink": {"sqlite": {"path": str(db), "table": "plants"}},
        },
    }
    path = tmp_path / "sig.yaml"
    path.write_text(yaml.safe_dump(body))
    calls_before = sim.stats()["vendors"]["slow"]["total"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "fleetsync", "worker", "--manifest", str(path), "--shards", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            with sqlite3.connect(db, timeout=5) as connection:
                (n,) = connection.execute("SELECT count(*) FROM plants").fetchone()
        except sqlite3.OperationalError:
            continue
        if n >= 50:
            break
    os.kill(worker.pid, signal.SIGTERM)
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 75, stderr
    with sqlite3.connect(db) as connection:
        (n,) = connection.execute("SELECT count(*) FROM plants").fetchone()
    assert 50 <= n < 3000  # in-flight items finished and flushed, the rest left for later
    # Every item fetched before the exit was written: none was in flight and lost.
    assert sim.stats()["vendors"]["slow"]["total"] - calls_before == n


def test_worker_metrics_carry_no_run_pod_or_item_names(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    """Three runs of one schedule, each a worker process scraped while it runs: series are
    labelled by namespace, owner (the schedule) and vendor, never by the run."""
    import re
    import socket

    import httpx

    body = {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": "metrics"},
        "spec": {
            "fleet": {"inventory": {"generate": {"count": 400, "idTemplate": "p-{i}"}}},
            "source": {
                "http": {"url": f"{sim.url}/vendors/slow/plants/{{id}}"},
                "concurrency": {"mode": "fixed", "initial": 4, "min": 1, "max": 4},
                "mapping": {"power": "$.data.power"},
            },
            "sink": {"sqlite": {"path": str(tmp_path / "m.db"), "table": "plants"}},
        },
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(body))
    scraped = []
    for n in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        run = f"plants-every-15-{29925540 + n}"
        worker = subprocess.Popen(
            [sys.executable, "-m", "fleetsync", "worker", "--manifest", str(path), "--run", run,
             "--pod", f"{run}-0-abcde", "--metrics-port", str(port), "--namespace", "energy",
             "--owner", "plants-every-15"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            text = ""
            for _ in range(100):
                time.sleep(0.2)
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False).text
                except httpx.HTTPError:
                    continue
                if "fleetsync_items_total{" in text:
                    break
            scraped.append(text)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    for text in scraped:
        series = [line for line in text.splitlines() if line.startswith("fleetsync_")]
        assert any('owner="plants-every-15"' in line for line in series), text[:500]
        assert not any(re.search(r"plants-every-15-\d|abcde|p-\d", line) for line in series)
        assert not any(re.search(r'\b(pod|item|run|key)="', line) for line in series)
