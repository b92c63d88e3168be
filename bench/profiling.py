"""Where one shard's time goes: `fleetsync run` of 7,000 items in one process (``--shards
1``) under cProfile, summarised for the engine's owners: top functions by cumulative and by
own time, own time grouped by package, and the suspects the issue names.

cProfile counts every resumption of a coroutine as a call and its cumulative time only
while it runs, so coroutine rows read as "CPU spent inside", not wall time. Profiling slows
the run (the run's seconds under the profiler are printed for scale, not compared).
"""

from __future__ import annotations

import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from bench.common import Settings, manifest
from bench.throughput import fifty_ms
from fleetsync.simulator import SimulatorProcess

Key = tuple[str, int, str]
SUSPECTS = (
    ("per-item JSONPath (worker/mapping.py)", r"fleetsync/worker/mapping\.py"),
    ("adaptive concurrency (worker/concurrency.py)", r"fleetsync/worker/concurrency\.py"),
    ("statistics.median", r"statistics\.py:\d+\(median\)"),
    ("httpx (models, URLs, client)", r"^httpx/"),
    ("httpx_aiohttp transport", r"^httpx_aiohttp/"),
    ("aiohttp", r"^aiohttp/"),
    ("copy / deepcopy", r"copy\.py"),
    ("pydantic", r"^pydantic"),
    ("sqlite3 executemany/commit", r"sqlite3\.Connection|sqlite3\.Cursor"),
)


def _where(key: Key) -> str:
    file, line, func = key
    if file == "~":
        return func  # a built-in: "{method 'executemany' of 'sqlite3.Connection' objects}"
    for marker in ("/operator/", "/site-packages/"):
        if marker in file:
            return f"{file.split(marker, 1)[1]}:{line}({func})"
    return f"{Path(file).name}:{line}({func})"


def _package(where: str) -> str:
    if where.startswith("{") or where.startswith("<"):
        return "built-ins (C calls)"
    if where.startswith("fleetsync/"):
        return where.rsplit(":", 1)[0].removesuffix(".py").replace("/", ".")
    head = (
        where.split("/", 1)[0]
        if "/" in where.split(":", 1)[0]
        else "stdlib: " + where.split(":", 1)[0]
    )
    return head


def _profile(count: int, out: Path) -> float:
    with SimulatorProcess(fifty_ms()) as sim, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "syncjob.yaml"
        path.write_text(yaml.safe_dump(manifest(sim.url, count, Path(tmp) / "p.db")))
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "fleetsync", "run", str(path),
             "--output", "json", "--shards", "1", "--state-dir", f"{tmp}/s"],
            check=True, capture_output=True,
        )  # fmt: skip
        return time.monotonic() - started


def _table(rows: list[tuple[str, int, float, float]], count: int) -> list[str]:
    return [
        "| function | calls | own (s) | cumulative (s) | cumulative µs per item |",
        "|---|---|---|---|---|",
        *(
            f"| `{where}` | {calls:,} | {own:.2f} | {cum:.2f} | {1e6 * cum / count:.0f} |"
            for where, calls, own, cum in rows
        ),
        "",
    ]


def summarise(stats: pstats.Stats, count: int, top: int = 20) -> list[str]:
    table = stats.stats  # type: ignore[attr-defined]
    rows = [(_where(k), v[1], v[2], v[3]) for k, v in table.items()]
    total = sum(r[2] for r in rows)
    by_package: Counter[str] = Counter()
    for where, _, own, _ in rows:
        by_package[_package(where)] += own
    command = max(
        (r[3] for r in rows if re.match(r"fleetsync/cli\.py:\d+\(run\)", r[0])), default=0.0
    )
    lines = [
        f"Own time in total: {total:.2f} s CPU ({1e6 * total / count:.0f} µs per item); the `run` "
        f"command itself {command:.2f} s ({1e6 * command / count:.0f} µs per item), the rest is the "
        f"interpreter's start and the CLI's imports ({total - command:.2f} s).",
        "",
    ]
    lines += [
        "**Own time by package** (top 15):",
        "",
        "| package | own (s) | share |",
        "|---|---|---|",
    ]
    lines += [f"| {p} | {s:.2f} | {s / total:.0%} |" for p, s in by_package.most_common(15)]
    lines += ["", "**Suspects** (sum of own time of the matching functions):", "",
              "| suspect | own (s) | share | most expensive function (cumulative s) |", "|---|---|---|---|"]  # fmt: skip
    for name, pattern in SUSPECTS:
        hits = [r for r in rows if re.search(pattern, r[0])]
        own = sum(r[2] for r in hits)
        worst = max(hits, key=lambda r: r[3], default=None)
        worst_text = f"`{worst[0]}` ({worst[3]:.2f})" if worst else "—"
        lines.append(f"| {name} | {own:.2f} | {own / total:.1%} | {worst_text} |")
    lines += ["", f"**Top {top} by cumulative time, fleetsync's functions:**", ""]
    ours = sorted((r for r in rows if r[0].startswith("fleetsync/")), key=lambda r: -r[3])
    lines += _table(ours[:top], count)
    lines += [f"**Top {top} by own time, all code:**", ""]
    lines += _table(sorted(rows, key=lambda r: -r[2])[:top], count)
    return lines


def case_profile(settings: Settings) -> list[str]:
    count = settings.items(7000)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.prof"
        seconds = _profile(count, out)
        stats = pstats.Stats(str(out))
    return [
        f"## 7. Profile: `fleetsync run` of {count:,} items, one shard in one process, cProfile",
        "",
        f"{seconds:.1f} s under the profiler (which slows Python code several-fold). "
        + (__doc__ or "").split("\n\n")[1].replace("\n", " "),
        "",
        *summarise(stats, count),
    ]
