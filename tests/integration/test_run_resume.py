"""`fleetsync run` interrupted as a whole — Ctrl-C or `kill -9` — then run again resumes from
its last checkpoint: every plant in SQLite once, and the second run fetches only what was not
final yet. The simulator in its own process counts every vendor call (`/_sim/stats`)."""

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
FLEETSYNC = [sys.executable, "-m", "fleetsync"]
COUNT = 3000
SHARDS = 2
SINK_BATCH = 500  # the SQLite sink's batch


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    config = SimulatorConfig(
        vendors={"slow": VendorConfig.model_validate({"latency": {"p50Ms": 30, "p99Ms": 60}})}
    )
    with SimulatorProcess(config) as simulator:
        yield simulator


# A rate limit this low runs both shards in the runner's own process (IN_PROCESS_RATE);
# without one, each shard has a worker process.
WHERE = {"worker-processes": None, "shards-in-this-process": 400.0}


def write_manifest(sim: SimulatorProcess, tmp: Path, rate: float | None = None) -> Path:
    body: dict[str, Any] = {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": "plants"},
        "spec": {
            "fleet": {"inventory": {"generate": {"count": COUNT, "idTemplate": "p-{i}"}}},
            "source": {
                "http": {"url": f"{sim.url}/vendors/slow/plants/{{id}}/realtime"},
                "concurrency": {"mode": "fixed", "initial": 8, "min": 1, "max": 8},
                "mapping": {"power": "$.data.power"},
                **({"rateLimit": {"requestsPerSecond": rate}} if rate else {}),
            },
            "sink": {"sqlite": {"path": str(tmp / "plants.db"), "table": "plants"}},
        },
    }
    path = tmp / "syncjob.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def command(manifest: Path, tmp: Path, *extra: str) -> list[str]:
    return [*FLEETSYNC, "run", str(manifest), "--output", "json", "--shards", str(SHARDS),
            "--state-dir", str(tmp / "state"), *extra]  # fmt: skip


def rows(db: Path) -> tuple[int, int]:
    """(rows, distinct keys)."""
    with sqlite3.connect(db, timeout=10) as connection:
        total, distinct = connection.execute(
            "SELECT count(*), count(DISTINCT key) FROM plants"
        ).fetchone()
    return int(total), int(distinct)


def kept(tmp: Path) -> int:
    """Items final in the progress the run keeps in its state dir (0 before it has any)."""
    try:
        stored = json.loads((tmp / "state" / "runs" / "plants" / "progress.json").read_text())
    except FileNotFoundError:
        return 0
    checkpoints = stored["progress"]["checkpoints"].values()
    return sum(sum(c["counts"].values()) for c in checkpoints)


def start_and_wait_for(manifest: Path, tmp: Path, at_least: int) -> subprocess.Popen[str]:
    """Start a run; return once its kept progress counts ``at_least`` final items."""
    process = subprocess.Popen(
        command(manifest, tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
        if kept(tmp) >= at_least:
            return process
    process.kill()
    pytest.fail("the run never got going")


def vendor_calls(sim: SimulatorProcess) -> int:
    return int(sim.stats()["vendors"]["slow"]["total"])


def last_json(stdout: str) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    assert lines, "no summary"
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def resume_and_check(sim: SimulatorProcess, manifest: Path, tmp: Path) -> dict[str, Any]:
    before = vendor_calls(sim)
    out = subprocess.run(
        command(manifest, tmp), capture_output=True, text=True, timeout=240, check=False
    )
    assert out.returncode == 0, out.stderr
    result = last_json(out.stdout)
    assert result["phase"] == "Succeeded", result
    assert rows(tmp / "plants.db") == (COUNT, COUNT), "every plant once, no duplicates"
    items = result["items"]
    assert items["synced"] + items["unchanged"] == COUNT and items["remaining"] == 0
    resumed = result["resumed"]
    assert 0 < resumed < COUNT
    # Only what was not final at the interruption is fetched again, give or take a batch.
    fetched = vendor_calls(sim) - before
    assert fetched <= COUNT - resumed + SINK_BATCH * SHARDS, (fetched, resumed)
    return result


def worker_logs(tmp: Path) -> list[str]:
    return sorted(p.name for p in (tmp / "state" / "runs" / "plants").glob("shard*.log"))


@pytest.mark.parametrize("where", WHERE)
def test_a_run_killed_with_sigkill_resumes_from_its_checkpoint(
    sim: SimulatorProcess, tmp_path: Path, where: str
) -> None:
    sim.reset()
    manifest = write_manifest(sim, tmp_path, WHERE[where])
    process = start_and_wait_for(manifest, tmp_path, at_least=600)
    os.kill(process.pid, signal.SIGKILL)  # the runner only, as `kill -9 <pid>` would
    process.communicate(timeout=30)
    assert bool(worker_logs(tmp_path)) == (where == "worker-processes")
    result = resume_and_check(sim, manifest, tmp_path)
    assert result["resumed"] >= 600
    # What was fetched but not yet in the kept progress is fetched again (a figure for the
    # report: it depends on when the kill lands relative to batches and reports).
    print(f"resumed {result['resumed']}, fetched again {vendor_calls(sim) - COUNT}")
    # A finished run starts fresh the next time.
    again = subprocess.run(
        command(manifest, tmp_path), capture_output=True, text=True, timeout=240, check=False
    )
    assert last_json(again.stdout)["resumed"] == 0


@pytest.mark.parametrize("where", WHERE)
def test_ctrl_c_reports_what_was_written_and_the_next_run_resumes(
    sim: SimulatorProcess, tmp_path: Path, where: str
) -> None:
    sim.reset()
    manifest = write_manifest(sim, tmp_path, WHERE[where])
    process = start_and_wait_for(manifest, tmp_path, at_least=600)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    interrupted = last_json(stdout)
    assert "interrupted" in interrupted["message"]
    items = interrupted["items"]
    # The shards' final reports are folded in before the summary: it counts every row.
    assert items["synced"] == rows(tmp_path / "plants.db")[0]
    assert items["remaining"] == COUNT - items["synced"] - items["failed"]
    result = resume_and_check(sim, manifest, tmp_path)
    assert result["resumed"] == items["synced"]


def test_restart_starts_over(sim: SimulatorProcess, tmp_path: Path) -> None:
    sim.reset()
    manifest = write_manifest(sim, tmp_path)
    process = start_and_wait_for(manifest, tmp_path, at_least=300)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    before = vendor_calls(sim)
    out = subprocess.run(
        command(manifest, tmp_path, "--restart"),
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert last_json(out.stdout)["resumed"] == 0
    assert vendor_calls(sim) - before == COUNT
