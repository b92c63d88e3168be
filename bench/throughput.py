"""Throughput cases: 7,000 plants on SQLite and on DynamoDB (moto), and 100,000 on one shard,
each against the hand-written baselines of bench/baselines.py in the same rounds."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import baselines
from bench.common import (
    ROOT,
    Settings,
    interleave,
    manifest,
    ratios,
    run_fleetsync,
    spread,
    spread_x,
    temp_db,
    timed,
    vendor,
)
from fleetsync.simulator import SimulatorConfig, SimulatorProcess

WIDTHS = (64, 128, 256)
FIXED_256 = {"mode": "fixed", "initial": 256, "min": 1, "max": 256}


def fifty_ms() -> SimulatorConfig:
    return SimulatorConfig(vendors={f"v{i}": vendor(50) for i in range(3)})


def _raw(url: str, count: int, width: int) -> Callable[[], float]:
    def once() -> float:
        with temp_db() as db:
            return timed(lambda: baselines.raw_bound(url, count, db, width))

    return once


def _fleetsync(
    url: str, count: int, *args: str, runs: list[Any] | None = None, **spec: Any
) -> Callable[[], float]:
    def once() -> float:
        with temp_db("f.db") as db:
            run = run_fleetsync(manifest(url, count, db, **spec), *args)
        if runs is not None:
            runs.append(run)
        return run.seconds

    return once


def case_sqlite(settings: Settings) -> list[str]:
    count = settings.items(7000)
    with SimulatorProcess(fifty_ms()) as sim:
        cases: dict[str, Callable[[], float]] = {}

        def seed() -> float:
            with temp_db() as db:
                return timed(lambda: baselines.seed_sqlite(sim.url, count, db))

        def process(command: Callable[[Path], list[str]]) -> Callable[[], float]:
            def once() -> float:
                with temp_db() as db:
                    return timed(lambda: subprocess.run(command(db), check=True))

            return once

        cases["seed"] = seed
        cases["seed-process"] = process(lambda db: baselines.seed_command(sim.url, count, db))
        for width in WIDTHS:
            cases[f"raw-{width}"] = _raw(sim.url, count, width)
        cases["raw-process"] = process(
            lambda db: baselines.raw_command(sim.url, count, db, max(WIDTHS))
        )
        cases["fleetsync"] = _fleetsync(sim.url, count)
        cases["fleetsync-1"] = _fleetsync(sim.url, count, "--shards", "1")
        cases["fleetsync-1-fixed"] = _fleetsync(
            sim.url, count, "--shards", "1", source={"concurrency": FIXED_256}
        )
        t = interleave(settings.repeat, cases)
    raw = [min(t[f"raw-{w}"][i] for w in WIDTHS) for i in range(settings.repeat)]
    raw_process, seed_process = t["raw-process"], t["seed-process"]
    mine, one, fixed = t["fleetsync"], t["fleetsync-1"], t["fleetsync-1-fixed"]
    best = {w: statistics.median(t[f"raw-{w}"]) for w in WIDTHS}
    return [
        f"## 1. {count:,} plants, 3 vendors at 50 ms, SQLite: fleetsync vs the raw bound and seed 000",
        "",
        "`fleetsync run` as a user runs it (auto plan, a child process, its start included, "
        "its bytecode compiled as `pip install` leaves it). "
        "Raw bound: one aiohttp session, no connection cap, the best of "
        f"{'/'.join(map(str, WIDTHS))} fetch loops each round, SQLite `executemany` per 500 "
        "in a writer thread. Seed pattern: seed 000 as written. Each baseline runs twice: as "
        "its own process (`python -m bench.baselines`, its start and the imports it needs "
        "included, as "
        "fleetsync's; the headline ratios), and inside the benchmark's warm process (no start).",
        "",
        "| program | seconds: median (min-max) | items/s (median) |",
        "|---|---|---|",
        f"| raw bound, {max(WIDTHS)} loops, as a process | {spread(raw_process)} | {count / statistics.median(raw_process):,.0f} |",
        f"| seed pattern, as a process | {spread(seed_process)} | {count / statistics.median(seed_process):,.0f} |",
        f"| raw bound (best width, in process) | {spread(raw)} | {count / statistics.median(raw):,.0f} |",
        *(
            f"| raw bound, {w} loops | {spread(t[f'raw-{w}'])} | {count / best[w]:,.0f} |"
            for w in WIDTHS
        ),
        f"| seed pattern (in process) | {spread(t['seed'])} | {count / statistics.median(t['seed']):,.0f} |",
        f"| fleetsync run | {spread(mine)} | {count / statistics.median(mine):,.0f} |",
        f"| fleetsync run --shards 1 | {spread(one)} | {count / statistics.median(one):,.0f} |",
        f"| fleetsync run --shards 1, fixed concurrency 256 | {spread(fixed)} | {count / statistics.median(fixed):,.0f} |",
        "",
        f"- **fleetsync / raw bound** (throughput, per round, process against process): {spread_x(ratios(raw_process, mine))} — goal ≥ 0.8x; "
        f"against the raw bound's best width in the warm process: {spread_x(ratios(raw, mine))}.",
        f"- **fleetsync / seed pattern** (process against process): {spread_x(ratios(seed_process, mine))} — goal ≥ 2x; "
        f"against the seed in the warm process: {spread_x(ratios(t['seed'], mine))}.",
        f"- `--shards 1` (one process, shard in-process) / raw bound: {spread_x(ratios(raw, one))}; "
        f"/ auto plan: {spread_x(ratios(mine, one))} (above 1x: the auto plan's shard processes cost more than they bring).",
        f"- Fixed 256 / adaptive, both `--shards 1`: {spread_x(ratios(one, fixed))} (above 1x: adaptive "
        "concurrency's ramp from 16 costs this much on a vendor that never pushes back).",
        "",
    ]


def _moto_table(client: Any, n: int) -> str:
    name = f"plants-{n}"
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
    )  # fmt: skip
    return name


def _dynamo_fleetsync(url: str, count: int, endpoint: str, new_table: Callable[[], str],
                      skip_unchanged: bool, calls: list[float]) -> Callable[[], float]:  # fmt: skip
    def once() -> float:
        with temp_db("unused.db") as db:
            body = manifest(url, count, db, write={"skipUnchanged": skip_unchanged})
        body["spec"]["sink"] = {
            "dynamodb": {"table": new_table(), "endpointUrl": endpoint, "key": {"PK": "PLANT#{id}"}}
        }
        run = run_fleetsync(body)
        calls.append(100 * run.summary["cost"]["sinkCalls"] / count)
        return run.seconds

    return once


def case_dynamodb(settings: Settings) -> list[str]:
    sys.path.insert(0, str(ROOT / "tests"))
    import boto3

    from support.dynamodb import moto_server  # type: ignore[import-not-found]

    count = settings.items(7000)
    # fleetsync's sink takes boto3's default credential chain without a Secret.
    for key, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "y"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):  # fmt: skip
        os.environ.setdefault(key, value)
    numbers = iter(range(1000))
    with SimulatorProcess(fifty_ms()) as sim, moto_server() as endpoint:
        client = boto3.client("dynamodb", endpoint_url=endpoint)

        def new_table() -> str:
            return _moto_table(client, next(numbers))

        def seed() -> float:
            table = new_table()
            return timed(lambda: baselines.seed_dynamodb(sim.url, count, endpoint, table))

        def seed_process() -> float:
            command = baselines.seed_dynamodb_command(sim.url, count, endpoint, new_table())
            return timed(lambda: subprocess.run(command, check=True))

        calls: dict[bool, list[float]] = {True: [], False: []}
        t = interleave(settings.repeat, {
            "seed": seed,
            "seed-process": seed_process,
            "fleetsync": _dynamo_fleetsync(sim.url, count, endpoint, new_table, True, calls[True]),
            "fleetsync-no-skip": _dynamo_fleetsync(sim.url, count, endpoint, new_table, False, calls[False]),
        })  # fmt: skip
    return [
        f"### {count:,} plants into DynamoDB (moto server), same vendors",
        "",
        "| program | seconds: median (min-max) | sink calls per 100 items |",
        "|---|---|---|",
        f"| seed pattern (15 threads, batches of 25), as a process | {spread(t['seed-process'])} | 4.0 (BatchWriteItem only) |",
        f"| seed pattern, in the benchmark's warm process | {spread(t['seed'])} | 4.0 |",
        f"| fleetsync, skipUnchanged (default) | {spread(t['fleetsync'])} | {spread(calls[True], '.1f')} |",
        f"| fleetsync, skipUnchanged: false | {spread(t['fleetsync-no-skip'])} | {spread(calls[False], '.1f')} |",
        "",
        f"- **fleetsync / seed pattern** (throughput, per round, process against process): "
        f"{spread_x(ratios(t['seed-process'], t['fleetsync']))} with change detection, "
        f"{spread_x(ratios(t['seed-process'], t['fleetsync-no-skip']))} without — goal ≥ 1x; against the "
        f"seed in the warm process (boto3 and aiohttp already imported): {spread_x(ratios(t['seed'], t['fleetsync']))} / "
        f"{spread_x(ratios(t['seed'], t['fleetsync-no-skip']))}.",
        "- Sink calls per 100 items count change detection's reads; goal ≤ 5.0 with, ≤ 4.0 without. "
        "moto serves about 3,500 items/s on one core (MEASURED.md): it bounds both programs.",
        "",
    ]


def _best_width(url: str, count: int) -> tuple[int, dict[int, float]]:
    """One calibration pass of the raw bound at each width."""
    seconds = {w: _raw(url, count, w)() for w in WIDTHS}
    return min(seconds, key=seconds.__getitem__), seconds


def case_scale(settings: Settings) -> list[str]:
    count = settings.items(100_000, 1000)
    small = settings.items(7000)
    with SimulatorProcess(fifty_ms()) as sim:
        width, calibration = _best_width(sim.url, small)
        runs: list[Any] = []
        t = interleave(settings.repeat, {
            "raw": _raw(sim.url, count, width),
            "fleetsync": _fleetsync(sim.url, count, "--shards", "1", runs=runs),
        })  # fmt: skip
    rss = [r.peak_rss_mib for r in runs]
    return [
        f"## 2. One shard, {count:,} items at 50 ms vs the raw bound",
        "",
        f"Raw bound at {width} loops (calibration: "
        + ", ".join(f"{w}: {s:.2f} s" for w, s in calibration.items())
        + f" for {small:,} items); fleetsync with `--shards 1` (one process, in-process shard).",
        "",
        "| program | seconds: median (min-max) | items/s (median) | peak RSS (MiB) |",
        "|---|---|---|---|",
        f"| raw bound | {spread(t['raw'])} | {count / statistics.median(t['raw']):,.0f} | — |",
        f"| fleetsync run | {spread(t['fleetsync'])} | {count / statistics.median(t['fleetsync']):,.0f} "
        f"| {spread(rss, '.0f')} |",
        "",
        f"- **fleetsync / raw bound** (throughput, per round): {spread_x(ratios(t['raw'], t['fleetsync']))} — goal ≥ 0.8x.",
        "",
    ]
