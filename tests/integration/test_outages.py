"""Vendor outages against the simulator, through ``fleetsync run`` as a user runs it.

A short outage on one of three vendors is ridden out (the run waits for the breaker's
half-open probe, nothing fails); a vendor down for the whole run fails exactly its own items
once ``maxOutageSeconds`` has passed, each dead letter carrying the vendor's real answer.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetsync.simulator import SimulatorConfig, SimulatorProcess, VendorConfig

pytestmark = pytest.mark.integration
FLEETSYNC = [sys.executable, "-m", "fleetsync"]
VENDORS = ("sungrow", "huawei", "solaredge")


def simulator(outage: tuple[float, float]) -> SimulatorProcess:
    """Three vendors; sungrow answers 503 to everything between these offsets (seconds)."""
    fast = {"latency": {"p50Ms": 2, "p99Ms": 10}}
    down = {**fast, "outages": [{"startSeconds": outage[0], "endSeconds": outage[1]}]}
    return SimulatorProcess(
        SimulatorConfig(
            vendors={
                "sungrow": VendorConfig.model_validate(down),
                "huawei": VendorConfig.model_validate(fast),
                "solaredge": VendorConfig.model_validate(fast),
            }
        )
    )


@pytest.fixture
def short_outage() -> Iterator[SimulatorProcess]:
    # Down from the start for 4 s: the run (started within a second or two) meets ~3 s of it.
    with simulator((0.0, 4.0)) as sim:
        yield sim


@pytest.fixture
def long_outage() -> Iterator[SimulatorProcess]:
    with simulator((0.0, 3600.0)) as sim:
        yield sim


def manifest(sim: SimulatorProcess, db: Path, *, count: int, breaker: dict[str, Any]) -> Any:
    """The demo's shape: plants over three vendors, each with its own rate limit."""
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": "plants"},
        "spec": {
            "fleet": {"inventory": {"generate": {
                "count": count, "idTemplate": "p-{i}", "template": {"vendor": "{i%3}"}}}},
            "source": {
                "http": {"url": "{vendor.baseUrl}/plants/{id}/realtime", "timeoutSeconds": 5},
                "vendors": {"by": "vendor", "items": {
                    str(i): {"baseUrl": f"{sim.url}/vendors/{v}",
                             "rateLimit": {"requestsPerSecond": 300}}
                    for i, v in enumerate(VENDORS)}},
                "retry": {"maxAttempts": 3, "backoff": {"baseSeconds": 0.05, "maxSeconds": 0.2}},
                "circuitBreaker": breaker,
                "mapping": {"power": "$.data.power", "updated_at": "$.data.updated_at"},
            },
            "sink": {"sqlite": {"path": str(db), "table": "plants"}},
        },
    }  # fmt: skip


def run(tmp: Path, body: Any) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    path = tmp / "syncjob.yaml"
    path.write_text(yaml.safe_dump(body))
    out = subprocess.run(
        [*FLEETSYNC, "run", str(path), "--output", "json", "--state-dir", str(tmp / "state")],
        check=False, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr
    result: dict[str, Any] = json.loads(lines[-1])
    return out, result


def letters(db: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(db) as connection:
        return list(connection.execute("SELECT key, reason, attempts FROM plants_dead_letters"))


def test_a_3s_outage_on_one_of_three_vendors_is_ridden_out(
    short_outage: SimulatorProcess, tmp_path: Path
) -> None:
    db = tmp_path / "plants.db"
    breaker = {"minimumCalls": 20, "openSeconds": 2, "halfOpenCalls": 3}
    out, result = run(tmp_path, manifest(short_outage, db, count=3000, breaker=breaker))
    stats = short_outage.stats()["vendors"]["sungrow"]
    assert stats["byStatus"].get("503", 0) > 0, stats  # the run did meet the outage
    assert out.returncode == 0, (out.stderr, result)
    assert result["phase"] == "Succeeded"
    assert result["items"]["synced"] == 3000 and result["items"]["failed"] == 0
    assert letters(db) == []


def test_a_vendor_down_for_the_whole_run_fails_only_its_items_with_the_cause(
    long_outage: SimulatorProcess, tmp_path: Path
) -> None:
    db = tmp_path / "plants.db"
    breaker = {"minimumCalls": 20, "openSeconds": 2, "halfOpenCalls": 3, "maxOutageSeconds": 5}
    out, result = run(tmp_path, manifest(long_outage, db, count=1500, breaker=breaker))
    assert out.returncode == 2, (out.stderr, result)  # PartiallySucceeded
    down = {f"p-{i}" for i in range(1500) if i % 3 == 0}
    assert result["items"]["failed"] == len(down) == 500
    assert result["items"]["synced"] == 1000
    dead = letters(db)
    assert {key for key, _, _ in dead} == down
    for _key, reason, _attempts in dead:
        assert reason.startswith("0: HTTP 503"), reason  # the vendor's answer, not "breaker"
        assert "breaker open" not in reason
    # Items that reached the vendor say how often; those that waited and gave up say 0.
    calls = long_outage.stats()["vendors"]["sungrow"]["total"]
    assert sum(attempts for _, _, attempts in dead) == calls
    assert any(attempts == 0 for _, _, attempts in dead)
    assert all(s["reason"].startswith("0: HTTP 503") for s in result["failedItems"]["sample"])
    # Counted exactly by cause, not from the sample of twenty.
    assert result["failedItems"]["causes"] == [{"cause": "0: HTTP 503", "count": 500}]
