"""Plan a run: how many shards, and how many of them run at once.

A pure function of the spec and the fleet size, so it is unit-tested and its reason is
shown to the user in ``status.plan`` and an event. Shards are the unit of restart and of
progress; parallelism is how many pods run at once. The bottleneck of a sync is usually
the vendors' rate limits, not pods: past the point where the limits are saturated, more
pods only split the same budget thinner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fleetsync.api.v1alpha1.syncjob import SyncJobSpec

__all__ = ["ITEMS_PER_SHARD", "POD_ITEMS_PER_SECOND", "RunPlan", "plan_run"]

# A shard should be big enough to amortise a pod's start (a few seconds) and small enough
# that a restart repeats little work.
ITEMS_PER_SHARD = 1000
MAX_AUTO_SHARDS = 256
# What one worker pod sustains against a fast vendor (bench/results.md: well above this on
# one core with the aiohttp transport); planning with a conservative figure leaves headroom.
POD_ITEMS_PER_SECOND = 200.0
# Plan for the deadline with this much slack: retries, slow starts and 429s eat into it.
DEADLINE_HEADROOM = 1.5


@dataclass(frozen=True, slots=True)
class RunPlan:
    shards: int
    parallelism: int
    reason: str


def _vendor_budget(spec: SyncJobSpec) -> float | None:
    """Requests/s all shards together may send, or None when some vendor is unlimited."""
    source = spec.source
    default = source.rate_limit.requests_per_second if source.rate_limit else None
    if source.vendors is None:
        return default
    total = 0.0
    for vendor in source.vendors.items.values():
        limit = vendor.rate_limit.requests_per_second if vendor.rate_limit else default
        if limit is None:
            return None
        total += limit
    return total


def plan_run(spec: SyncJobSpec, total: int | None) -> RunPlan:
    """The plan for a fleet of ``total`` items (None: not known before the inventory is read)."""
    sharding = spec.sharding
    reasons: list[str] = []
    if isinstance(sharding.shards, int):
        shards = sharding.shards
        reasons.append(f"{shards} shards as requested")
    elif total is None:
        shards = sharding.max_parallelism
        reasons.append(f"fleet size unknown until read: {shards} shards (maxParallelism)")
    else:
        shards = min(MAX_AUTO_SHARDS, max(1, math.ceil(total / ITEMS_PER_SHARD)))
        reasons.append(f"{total} items / {ITEMS_PER_SHARD} per shard: {shards} shards")

    cap = min(shards, sharding.max_parallelism)
    if isinstance(sharding.parallelism, int):
        parallelism = min(sharding.parallelism, shards)
        reasons.append(f"parallelism {parallelism} as requested")
        return RunPlan(shards, max(1, parallelism), "; ".join(reasons))

    budget = _vendor_budget(spec)
    wanted = float(cap)
    if total is not None and spec.deadline_seconds:
        needed_rate = total / spec.deadline_seconds * DEADLINE_HEADROOM
        wanted = needed_rate / POD_ITEMS_PER_SECOND
        reasons.append(
            f"deadline {spec.deadline_seconds}s needs {needed_rate:.0f} items/s"
            f" ≈ {math.ceil(wanted)} pods at {POD_ITEMS_PER_SECOND:.0f} items/s each"
        )
    if budget is not None:
        # Past the vendors' combined budget more pods cannot go faster.
        by_budget = budget / POD_ITEMS_PER_SECOND
        if by_budget < wanted:
            wanted = by_budget
            reasons.append(f"vendor limits allow {budget:g} req/s in total")
    parallelism = max(1, min(cap, math.ceil(wanted)))
    reasons.append(f"parallelism {parallelism} (max {sharding.max_parallelism})")
    return RunPlan(shards, parallelism, "; ".join(reasons))
