"""The controller side of issue 13: status.failedItems counts failures by cause, the Degraded
condition names them, a failed Job's message carries the error a shard reported, and
maxItemFailurePercent applies when the Job completes."""

from __future__ import annotations

from typing import Any

from fleetsync.api.constants import Phase, Reason
from fleetsync.api.progress import ReportWire
from fleetsync.api.v1alpha1 import SyncJobSpec
from fleetsync.api.v1alpha1.status import SyncJobStatus
from fleetsync.controller.observe import build_status, observe
from fleetsync.coordination.progress import RunProgress

TIMES = "\N{MULTIPLICATION SIGN}"


def spec(**dead_letter: Any) -> SyncJobSpec:
    return SyncJobSpec.model_validate(
        {
            "fleet": {"inventory": {"generate": {"count": 1000}}},
            "source": {"http": {"url": "https://api.vendor.example/plants/{id}"}},
            "deadLetter": dead_letter,
        }
    )


def job(*conditions: tuple[str, str]) -> dict[str, Any]:
    listed = [{"type": t, "status": "True", "reason": r, "message": "m"} for t, r in conditions]
    return {"metadata": {"name": "plants"}, "status": {"conditions": listed}}


def report(shard: int, counts: dict[str, int], causes: dict[str, int], **extra: Any) -> ReportWire:
    wire = ReportWire(
        run="plants", shard=shard, pod=f"p{shard}", seq=1, state="done", shardTotal=500,
        seen=500, checkpoint={"watermark": 499, "above": "", "counts": counts}, vendors=[],
        failedSample=[{"key": "p-1", "reason": "sungrow: connection refused (10.0.0.1:443)",
                       "attempts": 4}],
        wants={}, causes=causes,
        cost={"vendorCalls": 0, "sinkCalls": 0, "writeUnits": 0.0, "readUnits": 0.0,
              "unprocessedItems": 0, "throttles": 0},
    )  # fmt: skip
    return ReportWire(**{**wire, **extra})  # type: ignore[typeddict-item]


def progress() -> RunProgress:
    run = RunProgress("plants", 2, expected_total=1000)
    run.take(report(0, {"synced": 16, "failed": 484}, {"sungrow: connection refused": 484}), 1)
    run.take(
        report(1, {"synced": 400, "failed": 100},
               {"sungrow: connection refused": 90, "huawei: HTTP 503": 10}),
        2,
    )  # fmt: skip
    return run


def test_status_counts_failed_items_by_cause_and_degraded_names_them() -> None:
    run = progress()
    s = spec()
    observation = observe(s, job(("Complete", "")), run.items(), stuck=None)
    assert observation.phase is Phase.PARTIALLY_SUCCEEDED
    status = build_status(
        SyncJobStatus(), generation=1, observation=observation, progress=run, plan=None,
        job=job(("Complete", "")), now=1_700_000_000,
    )  # fmt: skip
    assert status.failed_items is not None
    wire = status.model_dump(mode="json", by_alias=True)["failedItems"]
    assert wire["count"] == 584
    assert wire["causes"] == [
        {"cause": "sungrow: connection refused", "count": 574},
        {"cause": "huawei: HTTP 503", "count": 10},
    ]
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert f"574 {TIMES} sungrow: connection refused; 10 {TIMES} huawei: HTTP 503" in (
        degraded.message
    )


def test_max_item_failure_percent_fails_the_completed_run() -> None:
    run = progress()  # 584 of 1000 failed
    observation = observe(
        spec(maxItemFailurePercent=50), job(("Complete", "")), run.items(), stuck=None
    )
    assert (observation.phase, observation.reason) == (Phase.FAILED, Reason.TOO_MANY_FAILURES)
    assert "maxItemFailurePercent=50" in observation.message


def test_a_failed_jobs_message_carries_the_shards_error() -> None:
    run = RunProgress("plants", 1)
    error = "spec.sink.postgres: postgres: cannot connect: Connection refused (fix: …)"
    run.take(report(0, {}, {}, state="failed", error=error, checkpoint=None), 1)
    failed = observe(
        spec(),
        job(("Failed", "BackoffLimitExceeded")),
        run.items(),
        stuck=None,
        shard_error=run.last_error(),
    )
    assert failed.phase is Phase.FAILED and failed.message.endswith(f"; shard: {error}")
    refused = observe(
        spec(), job(("Failed", "PodFailurePolicy")), run.items(), stuck=None, shard_error=error
    )
    assert refused.reason == Reason.INVALID_SPEC and error in refused.message
