"""Autoscaling a run with ``parallelism: auto``: one pure decision per ``scale_interval``.

Raise parallelism by one when the estimated completion misses ``deadlineSeconds`` and no
vendor is throttling; lower it by one under sustained 429s (more than ten throttles per
running pod since the last decision). Never above ``min(shards, maxParallelism)`` nor
below one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.controller.observe import parse_time
from fleetsync.controller.plan import RunPlan

__all__ = ["ScaleStep", "next_parallelism"]


@dataclass(frozen=True, slots=True)
class ScaleStep:
    """A decision taken now: the parallelism to run at and the throttle count it saw."""

    parallelism: int
    throttled: int


def next_parallelism(
    spec: SyncJobSpec,
    plan: RunPlan,
    *,
    throttled: int,
    throttled_at_last: int,
    last_scaled: float,
    last_status: Mapping[str, Any] | None,
    now: float,
    interval: float,
) -> ScaleStep | None:
    """None when no decision is due (fixed parallelism, or within ``interval`` of the last)."""
    if not isinstance(spec.sharding.parallelism, str):
        return None
    if now - last_scaled < interval:
        return None
    cap = min(plan.shards, spec.sharding.max_parallelism)
    new = plan.parallelism
    if throttled - throttled_at_last > 10 * plan.parallelism:
        new = max(1, plan.parallelism - 1)
    elif spec.deadline_seconds and last_status:
        eta = parse_time(last_status.get("estimatedCompletionTime"))
        started = parse_time(last_status.get("startTime"))
        if eta and started and eta > started + spec.deadline_seconds:
            new = min(cap, plan.parallelism + 1)
    return ScaleStep(parallelism=new, throttled=throttled)
