"""fleetsync's benchmarks: `make bench` (python -m bench.run) writes bench/results.md.

Every figure is reported next to a baseline measured in the same run on the same machine
(ratios hold better than absolute numbers; see ../shared/MEASURED.md). Each case is the
median of ``--repeat`` runs. Not part of CI's pass/fail: speed is measured here, never
asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import yaml
from httpx_aiohttp import AiohttpTransport

from fleetsync.simulator import SimulatorConfig, SimulatorProcess, VendorConfig

ROOT = Path(__file__).resolve().parents[1]
FLEETSYNC = [sys.executable, "-m", "fleetsync"]


def median_of(repeat: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeat))


def vendor(latency_ms: float, **extra: Any) -> VendorConfig:
    return VendorConfig.model_validate(
        {"latency": {"p50Ms": latency_ms, "p99Ms": latency_ms * 1.5}, **extra}
    )


# --- 1. HTTP clients -----------------------------------------------------------------------


async def _client_rate(kind: str, url: str, concurrency: int, seconds: float) -> float:
    done = 0
    stop = time.monotonic() + seconds

    async def loop(get: Callable[[str], Any]) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            await get(f"{url}/p-{i}")
            i += 1
            done += 1

    if kind == "aiohttp":
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def get(u: str) -> None:
                async with session.get(u) as r:
                    await r.read()

            await asyncio.gather(*(loop(get) for _ in range(concurrency)))
    else:
        transport = AiohttpTransport() if kind == "httpx+aiohttp" else None
        limits = httpx.Limits(max_connections=concurrency * 2)
        async with httpx.AsyncClient(transport=transport, limits=limits, trust_env=False) as c:

            async def hget(u: str) -> None:
                (await c.get(u)).read()

            await asyncio.gather(*(loop(hget) for _ in range(concurrency)))
    return done / seconds


def bench_clients(seconds: float) -> list[dict[str, Any]]:
    rows = []
    config = SimulatorConfig(vendors={"zero": vendor(0), "fifty": vendor(50)})
    with SimulatorProcess(config) as sim:
        for name, latency in (("zero", 0), ("fifty", 50)):
            for concurrency in (16, 256):
                url = f"{sim.url}/vendors/{name}/plants"
                rates = {
                    kind: asyncio.run(_client_rate(kind, url, concurrency, seconds))
                    for kind in ("httpx", "aiohttp", "httpx+aiohttp")
                }
                rows.append({"latency": latency, "concurrency": concurrency, **rates})
    return rows


# --- 2. fleetsync run against the seed's pattern -------------------------------------------


async def _seed_pattern(base: str, count: int, db: Path) -> None:
    """Seed 000 as written: gather every fetch over one session (default connector: 100
    connections), then write in waves of 15 batches of 25 (here: SQLite transactions)."""
    async with aiohttp.ClientSession() as session:

        async def fetch(i: int) -> dict[str, Any]:
            async with session.get(f"{base}/vendors/v{i % 3}/plants/p-{i}/realtime") as r:
                data: dict[str, Any] = (await r.json())["data"]
                return data

        results = await asyncio.gather(*(fetch(i) for i in range(count)))
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE plants (key TEXT PRIMARY KEY, power REAL, updated_at TEXT)")
    batches = [results[i : i + 25] for i in range(0, len(results), 25)]
    for wave in range(0, len(batches), 15):
        for batch in batches[wave : wave + 15]:
            with connection:
                connection.executemany(
                    "INSERT OR REPLACE INTO plants VALUES (?, ?, ?)",
                    [(d["id"], d["power"], d["updated_at"]) for d in batch],
                )
    connection.close()


def _manifest(base: str, count: int, db: Path, **spec: Any) -> dict[str, Any]:
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


def run_fleetsync(body: dict[str, Any], *args: str) -> tuple[float, dict[str, Any], int]:
    """(seconds, summary, peak RSS of the shard processes in KiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "syncjob.yaml"
        path.write_text(yaml.safe_dump(body))
        started = time.monotonic()
        out = subprocess.run(
            [*FLEETSYNC, "run", str(path), "--output", "json", "--state-dir", f"{tmp}/s", *args],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    if out.returncode not in (0, 2):
        raise RuntimeError(out.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, json.loads(out.stdout.strip().splitlines()[-1]), peak


def bench_seed_pattern(count: int, repeat: int) -> dict[str, Any]:
    config = SimulatorConfig(vendors={f"v{i}": vendor(50) for i in range(3)})
    with SimulatorProcess(config) as sim:

        def baseline() -> float:
            with tempfile.TemporaryDirectory() as tmp:
                started = time.monotonic()
                asyncio.run(_seed_pattern(sim.url, count, Path(tmp) / "b.db"))
                return time.monotonic() - started

        def ours() -> float:
            with tempfile.TemporaryDirectory() as tmp:
                return run_fleetsync(_manifest(sim.url, count, Path(tmp) / "f.db"))[0]

        base, mine = median_of(repeat, baseline), median_of(repeat, ours)
    return {"items": count, "baseline": base, "fleetsync": mine}


# --- 2b. the same against DynamoDB (moto), as seed 000 runs it -------------------------------


def _seed_pattern_dynamodb(base: str, count: int, endpoint: str, table: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    async def fetch_all() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session:

            async def fetch(i: int) -> dict[str, Any]:
                async with session.get(f"{base}/vendors/v{i % 3}/plants/p-{i}/realtime") as r:
                    data: dict[str, Any] = (await r.json())["data"]
                    return data

            return await asyncio.gather(*(fetch(i) for i in range(count)))

    results = asyncio.run(fetch_all())
    client = boto3.client(
        "dynamodb", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="y",
    )  # fmt: skip

    def write(batch: list[dict[str, Any]]) -> None:
        items = [
            {"PutRequest": {"Item": {"PK": {"S": f"PLANT#{d['id']}"}, "power": {"N": str(d["power"])},
                                     "updated_at": {"S": d["updated_at"]}}}}
            for d in batch
        ]  # fmt: skip
        while items:
            left = client.batch_write_item(RequestItems={table: items}).get("UnprocessedItems", {})
            items = left.get(table, [])

    batches = [results[i : i + 25] for i in range(0, len(results), 25)]
    with ThreadPoolExecutor(15) as pool:
        for wave in range(0, len(batches), 15):
            list(pool.map(write, batches[wave : wave + 15]))


def bench_seed_dynamodb(count: int, repeat: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    import boto3

    from support.dynamodb import moto_server

    config = SimulatorConfig(vendors={f"v{i}": vendor(50) for i in range(3)})
    tables = iter(range(1000))
    with SimulatorProcess(config) as sim, moto_server() as endpoint:
        client = boto3.client(
            "dynamodb", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="x", aws_secret_access_key="y",
        )  # fmt: skip

        def new_table() -> str:
            name = f"plants-{next(tables)}"
            client.create_table(
                TableName=name, BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
            )  # fmt: skip
            return name

        def baseline() -> float:
            table = new_table()
            started = time.monotonic()
            _seed_pattern_dynamodb(sim.url, count, endpoint, table)
            return time.monotonic() - started

        summaries: list[dict[str, Any]] = []

        def ours() -> float:
            table = new_table()
            with tempfile.TemporaryDirectory() as tmp:
                body = _manifest(sim.url, count, Path(tmp) / "unused.db")
                body["spec"]["sink"] = {
                    "dynamodb": {
                        "table": table,
                        "endpointUrl": endpoint,
                        "key": {"PK": "PLANT#{id}"},
                    }
                }
                seconds, summary, _ = run_fleetsync(body)
                summaries.append(summary)
                return seconds

        # fleetsync's sink takes boto3's default credential chain without a Secret.
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "y")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        base, mine = median_of(repeat, baseline), median_of(repeat, ours)
    sink_calls = summaries[-1]["cost"]["sinkCalls"]
    return {"items": count, "baseline": base, "fleetsync": mine,
            "calls_per_100": 100 * sink_calls / count}  # fmt: skip


# --- 3. a shared limit over many shards ----------------------------------------------------


def bench_limit(shards: int, rate: float, count: int) -> dict[str, Any]:
    config = SimulatorConfig(vendors={"v0": vendor(5, rateLimit={"requestsPerSecond": rate})})
    with SimulatorProcess(config) as sim, tempfile.TemporaryDirectory() as tmp:
        body = _manifest(
            sim.url, count, Path(tmp) / "l.db", source={"rateLimit": {"requestsPerSecond": rate}}
        )
        body["spec"]["fleet"]["inventory"]["generate"]["template"] = {"vendor": "0"}
        elapsed, summary, _ = run_fleetsync(body, "--shards", str(shards))
        stats = sim.stats()["vendors"]["v0"]
    per_second = [int(v) for v in stats["acceptedPerSecond"].values()]
    # Whole seconds in the middle of the run (the first and last are partial).
    middle = per_second[1:-1] or per_second
    return {
        "shards": shards,
        "limit": rate,
        "max_in_a_second": stats["maxOfferedPerSecond"],
        "throttled": stats["byStatus"].get("429", 0),
        "mean_per_second": statistics.mean(middle),
        "ideal_seconds": count / rate,
        "seconds": elapsed,
        "phase": summary["phase"],
    }


# --- 4. adaptive vs fixed concurrency -------------------------------------------------------


def bench_adaptive(count: int) -> dict[str, Any]:
    # A vendor that slows down under load: 429s past 150 req/s, 30 ms per call.
    config = SimulatorConfig(
        vendors={f"v{i}": vendor(30, rateLimit={"requestsPerSecond": 150}) for i in range(3)}
    )
    results = {}
    with SimulatorProcess(config) as sim:
        modes = [
            (f"fixed-{n}", {"mode": "fixed", "initial": n, "min": 1, "max": n})
            for n in (8, 32, 128)
        ]
        modes.append(("adaptive", {"mode": "adaptive", "initial": 16, "min": 1, "max": 256}))
        for mode, concurrency in modes:
            sim.reset()
            with tempfile.TemporaryDirectory() as tmp:
                body = _manifest(
                    sim.url, count, Path(tmp) / "a.db", source={"concurrency": concurrency}
                )
                elapsed, summary, _ = run_fleetsync(body)
            stats = sim.stats()["vendors"]
            results[mode] = {
                "seconds": elapsed,
                "throttled": sum(v["byStatus"].get("429", 0) for v in stats.values()),
                "calls": sum(v["total"] for v in stats.values()),
                "failed": summary["items"]["failed"],
            }
    return results


# --- 5. small runs and big fleets ------------------------------------------------------------


def bench_small(repeat: int) -> dict[str, Any]:
    config = SimulatorConfig(vendors={f"v{i}": vendor(50) for i in range(3)})
    with SimulatorProcess(config) as sim:

        def once() -> float:
            with tempfile.TemporaryDirectory() as tmp:
                return run_fleetsync(_manifest(sim.url, 500, Path(tmp) / "s.db"))[0]

        def startup() -> float:
            started = time.monotonic()
            subprocess.run([*FLEETSYNC, "--help"], check=True, capture_output=True)
            return time.monotonic() - started

        return {
            "items": 500,
            "seconds": median_of(repeat, once),
            "cli_start": median_of(repeat, startup),
        }


def bench_memory(count: int) -> dict[str, Any]:
    config = SimulatorConfig(vendors={f"v{i}": vendor(0) for i in range(3)})
    code = (
        "import resource, sys, subprocess; "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(r.stdout.splitlines()[-1])"
    )
    with SimulatorProcess(config) as sim, tempfile.TemporaryDirectory() as tmp:
        results = {}
        for n in (1000, count):
            body = _manifest(sim.url, n, Path(tmp) / f"m{n}.db")
            path = Path(tmp) / f"m{n}.yaml"
            path.write_text(yaml.safe_dump(body))
            out = subprocess.run(
                [sys.executable, "-c", code, *FLEETSYNC, "run", str(path), "--output", "json",
                 "--shards", "1", "--state-dir", f"{tmp}/s{n}"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            lines = out.stdout.splitlines()
            summary = json.loads(lines[1])
            results[n] = {"rss_mib": int(lines[0]) / 1024, "synced": summary["items"]["synced"],
                          "seconds": summary["durationSeconds"]}  # fmt: skip
    return results


# --- report ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller fleets, one repeat")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.md")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    scale = 0.2 if args.quick else 1.0
    started = time.monotonic()
    lines = [
        "# fleetsync benchmarks",
        "",
        f"`python -m bench.run{' --quick' if args.quick else ''}` on {platform.node()}: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Medians of {repeat} run(s); "
        "vendor simulator in its own process on loopback.",
        "",
    ]
    seed = bench_seed_pattern(int(7000 * scale), repeat)
    lines += [
        "## 1. 7,000 plants, 3 vendors at 50 ms: fleetsync run vs seed 000's pattern",
        "",
        "Baseline: seed 000 as written (gather all fetches on one aiohttp session, then waves "
        "of 15 batch writes of 25), writing to SQLite like fleetsync here.",
        "",
        "| items | seed pattern (s) | fleetsync run (s) | ratio (seed / fleetsync) |",
        "|---|---|---|---|",
        f"| {seed['items']} | {seed['baseline']:.2f} | {seed['fleetsync']:.2f} | "
        f"{seed['baseline'] / seed['fleetsync']:.2f}x |",
        "",
    ]
    dynamo = bench_seed_dynamodb(int(7000 * scale), repeat)
    lines += [
        "Against DynamoDB (moto server; seed 000's real sink), same vendors:",
        "",
        "| items | seed pattern (s) | fleetsync run (s) | ratio | fleetsync sink calls per 100 items |",
        "|---|---|---|---|---|",
        f"| {dynamo['items']} | {dynamo['baseline']:.2f} | {dynamo['fleetsync']:.2f} | "
        f"{dynamo['baseline'] / dynamo['fleetsync']:.2f}x | {dynamo['calls_per_100']:.1f} |",
        "",
        "moto serves about 3,500 items/s on one core (MEASURED.md): the sink, not fleetsync, "
        "bounds both columns here.",
        "",
    ]
    clients = bench_clients(2.0 if args.quick else 4.0)
    lines += [
        "## 2. HTTP client requests/s (why the engine uses httpx over an aiohttp transport)",
        "",
        "| vendor latency | concurrency | httpx | aiohttp | httpx + aiohttp transport | transport / httpx |",
        "|---|---|---|---|---|---|",
    ]
    for row in clients:
        lines.append(
            f"| {row['latency']} ms | {row['concurrency']} | {row['httpx']:.0f} | {row['aiohttp']:.0f} "
            f"| {row['httpx+aiohttp']:.0f} | {row['httpx+aiohttp'] / row['httpx']:.1f}x |"
        )
    limit = bench_limit(8, 25, int(750 * scale) or 150)
    lines += [
        "",
        "## 3. One 25 req/s vendor budget split over 8 shard processes",
        "",
        "| shards | limit | most requests in one second | 429s | mean req/s (whole seconds) | "
        "utilisation | run (s) vs ideal (s) |",
        "|---|---|---|---|---|---|---|",
        f"| {limit['shards']} | {limit['limit']:g} | {limit['max_in_a_second']} | {limit['throttled']} "
        f"| {limit['mean_per_second']:.1f} | {limit['mean_per_second'] / limit['limit']:.0%} "
        f"| {limit['seconds']:.1f} vs {limit['ideal_seconds']:.1f} |",
        "",
    ]
    adaptive = bench_adaptive(int(3000 * scale))
    adapt = adaptive["adaptive"]
    best_name, fixed = min(
        ((m, r) for m, r in adaptive.items() if m != "adaptive"), key=lambda mr: mr[1]["seconds"]
    )
    lines += [
        "## 4. Adaptive vs fixed concurrency against vendors that throttle past 150 req/s",
        "",
        "| mode | run (s) | vendor calls | 429s | failed items |",
        "|---|---|---|---|---|",
        *(
            f"| {mode} | {r['seconds']:.2f} | {r['calls']} | {r['throttled']} | {r['failed']} |"
            for mode, r in adaptive.items()
        ),
        "",
        f"Adaptive vs the best fixed setting ({best_name}): throughput "
        f"{fixed['seconds'] / adapt['seconds']:.2f}x, 429s {adapt['throttled'] / max(1, adapt['calls']):.1%} "
        f"of adaptive's calls (fixed: {fixed['throttled'] / max(1, fixed['calls']):.1%}).",
        "",
    ]
    small = bench_small(repeat)
    lines += [
        "## 5. 500 items (seed: under 5 s)",
        "",
        f"`fleetsync run` of 500 items at 50 ms: {small['seconds']:.2f} s, of which "
        f"{small['cli_start']:.2f} s is the CLI's start (`fleetsync --help`).",
        "",
    ]
    memory = bench_memory(int(100_000 * scale))
    small_n, big_n = sorted(memory)
    lines += [
        "## 6. Memory of one shard: 1,000 vs 100,000 items (streamed, not held)",
        "",
        "| items | peak RSS (MiB) | synced | run (s) |",
        "|---|---|---|---|",
        *(
            f"| {n} | {m['rss_mib']:.0f} | {m['synced']} | {m['seconds']:.1f} |"
            for n, m in sorted(memory.items())
        ),
        "",
        f"RSS ratio ({big_n} / {small_n} items): "
        f"{memory[big_n]['rss_mib'] / memory[small_n]['rss_mib']:.2f}x.",
        "",
        f"Total benchmark time: {time.monotonic() - started:.0f} s.",
        "",
    ]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
