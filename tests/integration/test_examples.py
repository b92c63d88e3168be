"""Every example runs through `fleetsync run`, scaled down by its one parameter, against the
simulator and the real sinks (SQLite, PostgreSQL, DynamoDB via moto) — as README says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetsync.simulator import SimulatorConfig, SimulatorProcess, VendorConfig

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
# examples/simulator/ holds cluster objects (the simulator's Deployment and Service), not
# fleet manifests: it is applied by the kind e2e (tests/e2e/kind/examples.sh).
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*/*.yaml") if p.parent.name != "simulator")
LOCAL = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    names = ("sungrow", "huawei", "solaredge", "plans", "devices", "meters")
    fast = VendorConfig.model_validate({"latency": {"p50Ms": 2, "p99Ms": 8}})
    with SimulatorProcess(SimulatorConfig(vendors=dict.fromkeys(names, fast))) as simulator:
        yield simulator


def scaled(path: Path, sim: SimulatorProcess, tmp: Path, dynamodb: str, count: int) -> Path:
    text = path.read_text().replace(LOCAL, sim.url).replace("http://127.0.0.1:5000", dynamodb)
    body: dict[str, Any] = yaml.safe_load(text)
    spec = body["spec"]["jobTemplate"]["spec"] if body["kind"] == "SyncSchedule" else body["spec"]
    spec["fleet"]["inventory"]["generate"]["count"] = count
    sink = spec["sink"]
    if "sqlite" in sink:
        sink["sqlite"]["path"] = str(tmp / "example.db")
    if "dynamodb" in sink:
        sink["dynamodb"].update(endpointUrl=dynamodb, createTable=True, table=f"t-{path.stem}")
    out = tmp / path.name
    out.write_text(yaml.safe_dump(body))
    return out


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{p.parent.name}/{p.name}" for p in EXAMPLES])
def test_every_example_runs_scaled_down(
    example: Path, sim: SimulatorProcess, tmp_path: Path, postgres_dsn: str,
    dynamodb_endpoint: str,
) -> None:  # fmt: skip
    manifest = scaled(example, sim, tmp_path, dynamodb_endpoint, count=60)
    secrets = tmp_path / "secrets"
    for name, key, value in (
        ("plans-db", "dsn", postgres_dsn),
        *(("vendor-keys", str(i), f"token-{i}") for i in range(3)),
    ):
        (secrets / name).mkdir(parents=True, exist_ok=True)
        (secrets / name / key).write_text(value)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    out = subprocess.run(
        [sys.executable, "-m", "fleetsync", "run", str(manifest), "--output", "json",
         "--secrets-dir", str(secrets), "--state-dir", str(tmp_path / "state")],
        check=False, capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["phase"] == "Succeeded"
    items = summary["items"]
    # measurements: 60 measurements of 100 users arrive several per key; merged by orderBy.
    assert items["total"] == 60 and items["failed"] == 0 and items["remaining"] == 0
