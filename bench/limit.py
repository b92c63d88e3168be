"""One vendor's rate limit shared by 8 shards (issue 17, item 4): how much of the
budget the fleet uses, how long the run takes against the ideal (items / limit, the
baseline), and that no second ever saw more requests than the limit."""

from __future__ import annotations

import statistics
import sys
from typing import Any

from bench.common import Settings, manifest, run_fleetsync, spread, temp_db, vendor
from fleetsync.simulator import SimulatorConfig, SimulatorProcess


def _once(sim: SimulatorProcess, shards: int, rate: float, count: int) -> dict[str, Any]:
    sim.reset()
    with temp_db("l.db") as db:
        body = manifest(sim.url, count, db, source={"rateLimit": {"requestsPerSecond": rate}})
        body["spec"]["fleet"]["inventory"]["generate"]["template"] = {"vendor": "0"}
        run = run_fleetsync(body, "--shards", str(shards))
    stats = sim.stats()["vendors"]["v0"]
    per_second = [int(v) for v in stats["acceptedPerSecond"].values()]
    middle = per_second[1:-1] or per_second  # the first and last seconds are partial
    seconds = [int(k) for k in stats["acceptedPerSecond"]]
    span = max(seconds) - min(seconds) + 1 if seconds else 1
    return {
        "most": stats["maxOfferedPerSecond"],
        "throttled": stats["byStatus"].get("429", 0),
        "mean": statistics.mean(middle),
        "span": sum(per_second) / (span * rate),
        "seconds": run.seconds,
        "phase": run.summary["phase"],
    }


def case_limit(settings: Settings) -> list[str]:
    shards, rate = 8, 25.0
    count = settings.items(750, 150)
    ideal = count / rate
    config = SimulatorConfig(vendors={"v0": vendor(5, rateLimit={"requestsPerSecond": rate})})
    with SimulatorProcess(config) as sim:
        runs = []
        for _ in range(settings.repeat):
            runs.append(_once(sim, shards, rate, count))
            print(f"  limit: {runs[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    return [
        f"## 3. One {rate:g} req/s vendor budget shared by {shards} shards, {count} items",
        "",
        "`fleetsync run --shards 8`: the run's rate limit holds it far below one process's pace, "
        "so the shards run in the runner's own process (`IN_PROCESS_RATE`), each shard its own "
        "holder of the budget.",
        "",
        f"Baseline: the ideal run, {count} / {rate:g} = {ideal:.1f} s. Utilisation: mean "
        "accepted requests per whole second (first and last seconds dropped) / limit; over the "
        "span: accepted requests / (seconds from the first request's to the last's, both "
        "counted whole, x limit).",
        "",
        "| most requests in any second | 429s | utilisation (whole seconds) | utilisation (span) | run (s) | run / ideal | phases |",
        "|---|---|---|---|---|---|---|",
        f"| {max(r['most'] for r in runs)} (limit {rate:g}) | {max(r['throttled'] for r in runs)} "
        f"| {spread([100 * r['mean'] / rate for r in runs], '.0f', ' %')} "
        f"| {spread([100 * r['span'] for r in runs], '.0f', ' %')} "
        f"| {spread([r['seconds'] for r in runs], '.1f')} "
        f"| {spread([r['seconds'] / ideal for r in runs])}x | {', '.join(sorted({r['phase'] for r in runs}))} |",
        "",
        "Goals: utilisation ≥ 97 %, run ≤ 1.05x ideal, never more than the limit in a second.",
        "",
    ]
