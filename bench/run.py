"""fleetsync's benchmarks: `make bench` (python -m bench.run) writes bench/results.md.

Every figure stands next to a baseline measured in the same run, interleaved round by
round, and is reported as median (min-max) of ``--repeat`` rounds (issue 17, item 8): the
machine is shared, absolute seconds move, ratios hold better (../shared/MEASURED.md). Not
part of CI's pass/fail: speed is measured here, never asserted in tests.

    python -m bench.run                      # every case, 3 rounds, writes bench/results.md
    python -m bench.run --only sqlite,limit  # some cases, printed (or --output FILE)
    python -m bench.run --quick              # smaller fleets, one round: a smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.adaptive import case_adaptive
from bench.budgets import case_budgets
from bench.clients import case_clients
from bench.cluster_scale import case_controller, case_fleet
from bench.common import ROOT, Settings, compile_as_installed
from bench.limit import case_limit
from bench.profiling import case_profile
from bench.small import case_small
from bench.throughput import case_dynamodb, case_scale, case_sqlite

CASES: dict[str, Callable[[Settings], list[str]]] = {
    "sqlite": case_sqlite,
    "dynamodb": case_dynamodb,
    "scale": case_scale,
    "limit": case_limit,
    "adaptive": case_adaptive,
    "small": case_small,
    "clients": case_clients,
    "profile": case_profile,
    "budgets": case_budgets,
    "fleet": case_fleet,
    "controller": case_controller,
}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds per case (default 3)")
    parser.add_argument("--quick", action="store_true", help="fleets at 1/5, one round")
    parser.add_argument("--only", default="", help=f"comma-separated cases: {', '.join(CASES)}")
    parser.add_argument("--output", type=Path, help="default: bench/results.md for a full run")
    parser.add_argument(
        "--note", default="", help="a line for the header (e.g. the machine's load)"
    )
    args = parser.parse_args()
    chosen = [c for c in args.only.split(",") if c] or list(CASES)
    unknown = set(chosen) - set(CASES)
    if unknown:
        parser.error(
            f"--only: unknown case(s) {', '.join(sorted(unknown))}; known: {', '.join(CASES)}"
        )
    args.cases = chosen
    if args.output is None and not args.only and not args.quick:
        args.output = ROOT / "bench" / "results.md"
    return args


def _header(settings: Settings, args: argparse.Namespace) -> list[str]:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    command = "python -m bench.run" + (" --quick" if args.quick else f" --repeat {settings.repeat}")
    return [
        "# fleetsync benchmarks",
        "",
        f"`{command}` on {platform.node()}: {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"load average at start {load}. Vendor simulator (and moto) in their own processes on "
        "loopback. Each case runs its baseline and fleetsync in the same rounds, the order "
        f"alternating; figures are median (min-max) of {settings.repeat} round(s), ratios "
        "taken round by round.",
        "",
        *([args.note, ""] if args.note else []),
    ]


def main() -> None:
    args = _arguments()
    settings = Settings(repeat=1 if args.quick else args.repeat, scale=0.2 if args.quick else 1.0)
    compile_as_installed()
    started = time.monotonic()
    lines = _header(settings, args)
    for name in args.cases:
        print(f"[{time.monotonic() - started:5.0f} s] {name}", file=sys.stderr, flush=True)
        lines += CASES[name](settings)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [
        f"Total benchmark time: {time.monotonic() - started:.0f} s; load average at the end {load}.",
        "",
    ]
    text = "\n".join(lines)
    if args.output is not None:
        args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
