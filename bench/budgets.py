"""The rate-limit budget book under many runs (issue 14, item 5: "renew time flat with 1,000
runs"): the time of one renewal — a shard's report folded into the book and its grants
returned — with 10, 100 and 1,000 runs alive, and with 10 runs alive after 1,000 came and
went (their keys expired), each as a ratio to the 10-run figure of the same round.

Each run has its own rate-limit key (its vendor) and two shards, each shard renewing once a
second on a simulated clock, as the controller's book sees them. A round builds each book,
lets it settle (splits made, reservations handed out), then times whole rounds of every
live shard renewing once: the figure is the mean time of one renewal. Pure Python, in this
process; no network.
"""

from __future__ import annotations

import math
import sys
import time

from bench.common import Settings, interleave, ratios, spread, spread_x
from fleetsync.coordination.budgets import BudgetBook
from fleetsync.coordination.timing import LeaseTiming

SHARDS = 2
SETTLE_ROUNDS = 6
TIMED_ROUNDS = 5
TIMED_RENEWALS = 4000  # at least: a few runs get more rounds, so the timer sees milliseconds
T0 = 1_795_529_900.0
TIMING = LeaseTiming()


def _holders(runs: range) -> list[tuple[str, dict[str, float]]]:
    return [(f"run-{r}/{s}/pod", {f"vendor-{r}": 20.0}) for r in runs for s in range(SHARDS)]


def _rounds(
    book: BudgetBook, holders: list[tuple[str, dict[str, float]]], start: float, n: int
) -> float:
    """``n`` rounds of every holder renewing once, a second apart; the clock after them."""
    now = start
    for _ in range(n):
        for holder, wants in holders:
            book.renew(holder, wants, now)
        now += 1.0
    return now


def _renewal_seconds(
    book: BudgetBook, holders: list[tuple[str, dict[str, float]]], now: float
) -> float:
    rounds = max(TIMED_ROUNDS, math.ceil(TIMED_RENEWALS / len(holders)))
    started = time.perf_counter()
    _rounds(book, holders, now, rounds)
    return (time.perf_counter() - started) / (rounds * len(holders))


def _alive(runs: int) -> float:
    book = BudgetBook(TIMING)
    holders = _holders(range(runs))
    now = _rounds(book, holders, T0, SETTLE_ROUNDS)
    return _renewal_seconds(book, holders, now)


KEYS_AFTER: list[int] = []  # keys left in the book after the churn, one per round


def _after_churn() -> float:
    """1,000 runs renew, then go (half release, half crash); 10 runs carry on until every
    grant of the others has lapsed; then the 10 are timed."""
    book = BudgetBook(TIMING)
    gone, live = _holders(range(10, 1010)), _holders(range(10))
    now = _rounds(book, gone + live, T0, SETTLE_ROUNDS)
    for i, (holder, _) in enumerate(gone):
        if i % 2:
            book.release(holder, now)
    lapse = TIMING.reservation_seconds + TIMING.holder_timeout + 2 * TIMING.lease_seconds
    now = _rounds(book, live, now, int(lapse) + 10)
    KEYS_AFTER.append(len(book.tracked_keys()))
    return _renewal_seconds(book, live, now)


def case_budgets(settings: Settings) -> list[str]:
    repeat = max(settings.repeat, 3)
    t = interleave(repeat, {
        "10 runs": lambda: _alive(10),
        "100 runs": lambda: _alive(100),
        "1,000 runs": lambda: _alive(1000),
        "10 runs, after 1,000 came and went": _after_churn,
    })  # fmt: skip
    print(f"  keys left after the churn: {KEYS_AFTER}", file=sys.stderr, flush=True)
    base = t["10 runs"]
    rows = [
        f"| {name} | {spread([s * 1e6 for s in seconds], '.1f')} | "
        f"{spread_x(ratios(seconds, base))} |"
        for name, seconds in t.items()
    ]
    return [
        "## 8. Rate-limit budget book: one renewal with many runs alive (issue 14, item 5)",
        "",
        f"Each run: its own key, {SHARDS} shards renewing once a second (simulated clock); "
        f"mean over rounds of every live shard renewing once (at least {TIMED_ROUNDS} rounds "
        f"and {TIMED_RENEWALS:,} renewals), after "
        f"{SETTLE_ROUNDS} rounds to settle. Baseline: 10 runs, same round. Goal: flat.",
        "",
        "| runs alive | µs per renewal: median (min-max) | / 10 runs |",
        "|---|---|---|",
        *rows,
        "",
        f"- Keys left in the book after the 1,000 runs' grants lapsed: {max(KEYS_AFTER)} "
        "(the 10 live runs' own).",
        "",
    ]
