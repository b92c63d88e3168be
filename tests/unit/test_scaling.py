"""``next_parallelism``: the autoscaling decision for ``parallelism: auto``, pure."""

from __future__ import annotations

from typing import Any

from conftest import SYNCJOB

from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.controller.plan import RunPlan
from fleetsync.controller.scaling import ScaleStep, next_parallelism

PLAN = RunPlan(shards=8, parallelism=3, reason="test")
LATE = {"startTime": "2026-06-01T10:00:00Z", "estimatedCompletionTime": "2026-06-01T11:00:00Z"}


def spec(parallelism: Any = "auto", **extra: Any) -> SyncJobSpec:
    sharding = {"shards": 8, "parallelism": parallelism, "maxParallelism": 4}
    return SyncJobSpec.model_validate({**SYNCJOB["spec"], "sharding": sharding, **extra})


def decide(s: SyncJobSpec, **kw: Any) -> ScaleStep | None:
    args: dict[str, Any] = {
        "throttled": 0,
        "throttled_at_last": 0,
        "last_scaled": 0.0,
        "last_status": None,
        "now": 100.0,
        "interval": 30.0,
    }
    args.update(kw)
    return next_parallelism(s, PLAN, **args)


def test_fixed_parallelism_is_never_scaled() -> None:
    assert decide(spec(3), throttled=1000) is None


def test_at_most_one_decision_per_interval() -> None:
    assert decide(spec(), last_scaled=80.0) is None
    assert decide(spec(), last_scaled=70.0) == ScaleStep(parallelism=3, throttled=0)


def test_sustained_throttling_lowers_by_one() -> None:
    assert decide(spec(), throttled=31) == ScaleStep(parallelism=2, throttled=31)
    assert decide(spec(), throttled=40, throttled_at_last=10) == ScaleStep(3, 40)  # 30 = 10/pod


def test_a_missed_deadline_raises_by_one_up_to_the_cap() -> None:
    late = spec(deadlineSeconds=1800)
    assert decide(late, last_status=LATE) == ScaleStep(parallelism=4, throttled=0)
    at_cap = next_parallelism(
        late, RunPlan(8, 4, "x"), throttled=0, throttled_at_last=0, last_scaled=0.0,
        last_status=LATE, now=100.0, interval=30.0,
    )  # fmt: skip
    assert at_cap == ScaleStep(parallelism=4, throttled=0)
    assert decide(spec(deadlineSeconds=7200), last_status=LATE) == ScaleStep(3, 0)
