"""Runs sharing a rate-limit key with different rates: the key runs at the lowest, and the
status of the run that declared more says so (issue 12 item 5)."""

from __future__ import annotations

from typing import Any

from fleetsync.api.progress import ReportWire
from fleetsync.coordination.progress import RunProgress


def report(rate_in_force: float | None, declared: float) -> ReportWire:
    vendor: dict[str, Any] = {
        "name": "sungrow", "calls": 10, "errors": 0, "throttled": 0, "p95Ms": 40.0,
        "breaker": "Closed", "breakerSince": None, "breakerForced": False, "concurrency": 8,
        "limitKey": "sungrow-api", "requestsPerSecond": 5.0,
        "rateInForce": rate_in_force, "rateDeclared": declared,
    }  # fmt: skip
    return {
        "run": "plants", "shard": 0, "pod": "p0", "seq": 2, "state": "running",
        "shardTotal": None, "seen": 10, "checkpoint": None, "vendors": [vendor],  # type: ignore[typeddict-item]
        "cost": {"vendorCalls": 10, "sinkCalls": 1, "writeUnits": 10.0, "readUnits": 0.0,
                 "unprocessedItems": 0, "throttles": 0},
        "failedSample": [], "wants": {"sungrow-api": declared},
    }  # fmt: skip


def status_of(rate_in_force: float | None, declared: float) -> str | None:
    progress = RunProgress("plants", 1)
    progress.accept(report(None, declared) | {"seq": 1, "state": "starting"}, 1.0)  # type: ignore[arg-type]
    progress.accept(report(rate_in_force, declared), 2.0)
    (vendor,) = progress.vendors()
    return vendor.rate_limit


def test_a_run_held_below_its_rate_by_another_run_says_so() -> None:
    text = status_of(10.0, 25.0)
    assert text is not None
    assert "sungrow-api" in text and "10/s" in text and "25/s" in text and "lowest" in text


def test_a_run_at_its_own_rate_or_not_yet_told_says_nothing() -> None:
    assert status_of(25.0, 25.0) is None
    assert status_of(None, 25.0) is None
