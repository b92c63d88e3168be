"""Small runs, where fixed costs show: the CLI's start and 500 items end to end, each as a
process next to a process doing the least the same work needs (issue 17, item 2)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from bench import baselines
from bench.common import (
    FLEETSYNC,
    Settings,
    interleave,
    manifest,
    ratios,
    run_fleetsync,
    spread,
    spread_x,
    temp_db,
    timed,
)
from bench.throughput import fifty_ms
from fleetsync.simulator import SimulatorProcess


def _process(command: list[str]) -> Callable[[], float]:
    return lambda: timed(lambda: subprocess.run(command, check=True, capture_output=True))


def case_small(settings: Settings) -> list[str]:
    count = 500
    with SimulatorProcess(fifty_ms()) as sim:

        def raw() -> float:
            with temp_db() as db:
                return _process(baselines.raw_command(sim.url, count, db, 256))()

        def mine() -> float:
            with temp_db("f.db") as db:
                return run_fleetsync(manifest(sim.url, count, db)).seconds

        t = interleave(max(settings.repeat, 3), {
            "python": _process([sys.executable, "-c", "pass"]),
            "python+aiohttp": _process([sys.executable, "-c", "import aiohttp"]),
            "fleetsync --help": _process([*FLEETSYNC, "--help"]),
            "raw 500": raw,
            "fleetsync 500": mine,
        })  # fmt: skip
    return [
        "## 5. Fixed costs: CLI start and 500 items at 50 ms, process against process",
        "",
        "| program | seconds: median (min-max) |",
        "|---|---|",
        *(f"| `{name}` | {spread(seconds)} |" for name, seconds in t.items()),
        "",
        f"- `fleetsync --help` / bare `python -c pass`: {spread_x(ratios(t['fleetsync --help'], t['python']))}; "
        f"/ `python -c 'import aiohttp'`: {spread_x(ratios(t['fleetsync --help'], t['python+aiohttp']))} "
        "— goal ≤ 0.25 s absolute.",
        f"- 500 items, fleetsync / raw-bound script (time, per round): {spread_x(ratios(t['fleetsync 500'], t['raw 500']))} "
        "— goal ≤ 0.5 s absolute.",
        "",
    ]
