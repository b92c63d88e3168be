"""What every benchmark case shares: the simulator's vendors, the SyncJob it runs, running
`fleetsync run` as a user would (a child process, timed from outside), and the interleaved
repetition every figure rests on.

The machine is shared and loaded (2 cores, other engineers' tests): absolute seconds move by
2x between runs. So every case runs its baseline and fleetsync in the same round, round after
round (the order alternating, so a slow spell falls on both), and reports the ratio of each
round as min / median / max: a reader can tell a change from noise.
"""

from __future__ import annotations

import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleetsync.simulator import VendorConfig

ROOT = Path(__file__).resolve().parents[1]
FLEETSYNC = [sys.executable, "-m", "fleetsync"]


def compile_as_installed() -> None:
    """Write fleetsync's bytecode, as ``pip install`` does (and the image: its wheel is
    installed by pip). A development checkout is an editable install whose sources pip never
    compiled; with ``PYTHONDONTWRITEBYTECODE`` set (as in the image, and in many shells) every
    ``fleetsync`` process here compiled ~35 modules from source: about 0.08 s per process
    that no installed copy pays, while the baselines' libraries (aiohttp) had their bytecode.
    compileall writes it whatever that variable says."""
    import fleetsync

    compileall.compile_dir(Path(fleetsync.__file__).parent, quiet=1)


@dataclass(frozen=True)
class Settings:
    """How big and how often: ``scale`` shrinks fleets for smoke runs (``--quick``)."""

    repeat: int
    scale: float

    def items(self, full: int, least: int = 100) -> int:
        return max(least, int(full * self.scale))


def vendor(latency_ms: float, **extra: Any) -> VendorConfig:
    return VendorConfig.model_validate(
        {"latency": {"p50Ms": latency_ms, "p99Ms": latency_ms * 1.5}, **extra}
    )


# --- repetition ------------------------------------------------------------------------------


def interleave(repeat: int, cases: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run every case once per round, ``repeat`` rounds, reversing the order every other
    round; returns each case's seconds in round order (so round i's ratios pair up)."""
    results: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for round_ in range(repeat):
        for name in names if round_ % 2 == 0 else reversed(names):
            results[name].append(cases[name]())
            print(f"  {name}: {results[name][-1]:.2f}", file=sys.stderr, flush=True)
    return results


def ratios(top: list[float], bottom: list[float]) -> list[float]:
    """Round-by-round top / bottom."""
    return [t / b for t, b in zip(top, bottom, strict=True)]


def spread(values: list[float], fmt: str = ".2f", unit: str = "") -> str:
    """'median (min-max)', or the single value when there is one."""
    if len(values) == 1:
        return f"{values[0]:{fmt}}{unit}"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:{fmt}}{unit} ({low:{fmt}}-{high:{fmt}})"


def spread_x(values: list[float]) -> str:
    return spread(values, ".2f", "x")


# --- running fleetsync -----------------------------------------------------------------------


def manifest(base: str, count: int, db: Path, **spec: Any) -> dict[str, Any]:
    """7,000-plant style SyncJob: ids p-{i} over vendors v0..v2 (i % 3), SQLite sink."""
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": "bench"},
        "spec": {
            "fleet": {
                "inventory": {
                    "generate": {
                        "count": count,
                        "idTemplate": "p-{i}",
                        "template": {"vendor": "{i%3}"},
                    }
                }
            },
            "source": {
                "http": {"url": "{vendor.baseUrl}/plants/{id}/realtime"},
                "vendors": {
                    "by": "vendor",
                    "items": {str(i): {"baseUrl": f"{base}/vendors/v{i}"} for i in range(3)},
                },
                "mapping": {"power": "$.data.power", "updated_at": "$.data.updated_at"},
                **spec.pop("source", {}),
            },
            "sink": {"sqlite": {"path": str(db), "table": "plants"}},
            **spec,
        },
    }


@dataclass(frozen=True)
class Run:
    seconds: float
    summary: dict[str, Any]
    peak_rss_mib: float  # the largest process of the run's tree


def run_fleetsync(body: dict[str, Any], *args: str) -> Run:
    """`fleetsync run` in a child process; timed from outside, so its start counts."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "syncjob.yaml"
        path.write_text(yaml.safe_dump(body))
        command = [*FLEETSYNC, "run", str(path), "--output", "json", "--state-dir", f"{tmp}/s"]
        with open(f"{tmp}/out", "w+") as out, open(f"{tmp}/err", "w+") as err:
            started = time.monotonic()
            process = subprocess.Popen([*command, *args], stdout=out, stderr=err)
            # wait4, not wait: its rusage is this run's alone (RUSAGE_CHILDREN accumulates).
            _, status, usage = os.wait4(process.pid, 0)
            elapsed = time.monotonic() - started
            process.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0), err.seek(0)
            stdout, stderr = out.read(), err.read()
    if process.returncode not in (0, 2):
        raise RuntimeError(f"fleetsync run exited {process.returncode}: {stderr[-2000:]}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    return Run(elapsed, summary, usage.ru_maxrss / 1024)


@contextmanager
def temp_db(name: str = "b.db") -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp) / name


def timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started
