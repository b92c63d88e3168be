"""Every object the controller writes for a run stays under Kubernetes' limits at the
schema's maxima (issue 14, item 9): the progress ConfigMaps (1 MiB each) and the SyncJob's
status, for the largest shard count the schema allows, every shard with a worst-case but
valid report — 256 vendors with long names, a full failed sample with long texts, a long
error, a failure-cause map of 16 causes of 200 characters, a checkpoint bitmap — and what
a restarted controller reads back resumes every shard and counts every item."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleetsync.api.constants import Phase
from fleetsync.api.progress import ReportWire, VendorWire
from fleetsync.api.v1alpha1.source import MAX_VENDORS
from fleetsync.api.v1alpha1.status import SyncJobStatus
from fleetsync.api.v1alpha1.syncjob import MAX_SHARDS, Sharding
from fleetsync.controller.observe import Observation, build_status
from fleetsync.controller.plan import RunPlan
from fleetsync.controller.progress_parts import (
    SHARDS_PER_PART,
    clip_report,
    join_parts,
    part_count,
    split_parts,
)
from fleetsync.coordination.progress import RunProgress

MIB = 1024 * 1024
# The ConfigMap's data must stay under 1 MiB; leave this much for the key and metadata.
DATA_LIMIT = MIB - 16 * 1024
NOW = 1_795_529_900.0
RUN = "r" * 63  # a Job name is at most 63 characters
LONG = 253  # a DNS subdomain: the longest name Kubernetes gives anything


def vendors(count: int) -> list[VendorWire]:
    return [
        VendorWire(
            name=f"{i:03d}-" + "v" * (LONG - 4),
            calls=10**12 + i,
            errors=10**11,
            throttled=10**10,
            p95Ms=123456.7,
            breaker="open",
            breakerSince=NOW,
            breakerForced=False,
            concurrency=10_000,
            limitKey="https://" + "k" * (LONG - 8),
            requestsPerSecond=1e6 / 3,
            waiting=10**9,
            rateInForce=1e6 / 7,
            rateDeclared=1e6 / 3,
        )
        for i in range(count)
    ]


def worst_report(shard: int, pod: str, state: str, vendor_list: list[VendorWire]) -> ReportWire:
    report: dict[str, Any] = {
        "run": RUN,
        "shard": shard,
        "pod": pod,
        "seq": 10**9,
        "state": state,
        "shardTotal": 10**9,
        "seen": 10**9,
        # 8,192 items finished above a stuck one: a 1 KiB bitmap.
        "checkpoint": {
            "watermark": 10**8,
            "above": "/" * 1368,
            "counts": dict.fromkeys(("synced", "unchanged", "fresh", "stale", "failed"), 10**8),
        },
        "vendors": vendor_list,
        "cost": {
            "vendorCalls": 10**12,
            "sinkCalls": 10**12,
            "writeUnits": 1e12 / 3,
            "readUnits": 1e12 / 7,
            "unprocessedItems": 10**9,
            "throttles": 10**9,
        },
        "failedSample": [
            {"key": f"{shard}-{i}-" + "k" * 5000, "reason": "r" * 5000, "attempts": 20}
            for i in range(50)
        ],
        "wants": {v["limitKey"]: 1e6 for v in vendor_list if v["limitKey"]},
        "error": "e" * 100_000,
        # Another engineer's per-shard map of failure causes: at most 16 of 200 characters.
        "failureCauses": {f"{i:02d}" + "c" * 198: 10**9 for i in range(16)},
    }
    return clip_report(report)  # type: ignore[arg-type]


def pod(shard: int, n: int = 0) -> str:
    return f"{RUN[: 63 - 12]}-{shard:04d}-{n:02d}abcde"[:63]


def run_at_the_maximum(states: list[str], vendor_list: list[VendorWire]) -> RunProgress:
    progress = RunProgress(RUN, MAX_SHARDS)
    worst = {state: worst_report(0, "", state, vendor_list) for state in states}
    hello = worst_report(0, "", "starting", [])
    for shard in range(MAX_SHARDS):
        for n in range(21):  # 20 pods replaced before the last: remembered per shard
            progress.take({**hello, "shard": shard, "pod": pod(shard, n)}, NOW)
        state = states[shard % len(states)]
        progress.take({**worst[state], "shard": shard, "pod": pod(shard, 20)}, NOW)
    return progress


def restored(parts: list[str]) -> RunProgress:
    head, *rest = (json.loads(p) for p in parts)
    assert part_count(head) == len(parts)
    progress = RunProgress(RUN, MAX_SHARDS)
    progress.restore(join_parts(head, rest))
    return progress


def status_bytes(progress: RunProgress) -> int:
    status = build_status(
        SyncJobStatus(),
        generation=1,
        observation=Observation(Phase.RUNNING, "Running", "m" * 1024),
        progress=progress,
        plan=RunPlan(MAX_SHARDS, MAX_SHARDS, "reason " * 100),
        job={"metadata": {"name": RUN}, "status": {}},
        now=NOW + 60,
    )
    return len(json.dumps(status.model_dump(mode="json", by_alias=True)).encode())


def test_the_schema_allows_no_more_shards_than_the_size_test_builds() -> None:
    assert Sharding(shards=MAX_SHARDS).shards == MAX_SHARDS
    with pytest.raises(ValueError, match=f"between 1 and {MAX_SHARDS}"):
        Sharding(shards=MAX_SHARDS + 1)


@pytest.mark.parametrize(
    "states",
    [["running"], ["done", "failed", "interrupted"]],
    ids=["all-live", "all-finished"],
)
def test_every_object_fits_at_the_maximum_shard_count(states: list[str]) -> None:
    progress = run_at_the_maximum(states, vendors(MAX_VENDORS))
    parts = split_parts(progress.snapshot(), progress.shards)
    assert len(parts) == MAX_SHARDS // SHARDS_PER_PART
    sizes = [len(p.encode()) + len("progress.json") for p in parts]
    assert max(sizes) < DATA_LIMIT, sizes
    assert status_bytes(progress) < MIB
    # A restarted controller: every shard resumes where it was, nothing counts twice.
    back = restored(parts)
    assert back.items() == progress.items()
    assert back.cost() == progress.cost()
    assert back.failed_sample() == progress.failed_sample()
    assert all(back.resume_for(s) == progress.resume_for(s) for s in range(MAX_SHARDS))
    assert {s: v.pod for s, v in back.views.items()} == {
        s: v.pod for s, v in progress.views.items()
    }
    assert status_bytes(back) < MIB
    calls = {v.name: v.calls for v in back.vendors()}
    for vendor in progress.vendors():  # live shards may keep only their busiest vendors
        assert calls.get(vendor.name, 0) <= vendor.calls
    if "running" not in states:  # finished shards' counters are folded in, exactly
        assert back.vendors() == [
            v.model_copy(update={"p95_ms": None, "concurrency": None}) for v in back.vendors()
        ]
        assert calls == {v.name: v.calls for v in progress.vendors()}


def test_a_run_of_a_few_vendors_is_kept_whole_and_reads_back_the_same() -> None:
    few = vendors(3)
    progress = RunProgress(RUN, MAX_SHARDS)
    for shard in range(MAX_SHARDS):
        report = worst_report(shard, pod(shard), "running" if shard % 2 else "done", few)
        report.pop("error")
        report.pop("failureCauses")  # type: ignore[misc]
        report["failedSample"] = report["failedSample"][:1]
        report["failedSample"][0] |= {"key": f"item-{shard}", "reason": "HTTP 404"}
        progress.take(report, NOW)
    parts = split_parts(progress.snapshot(), progress.shards)
    back = restored(parts)
    assert back.vendors() == progress.vendors()
    assert back.cost() == progress.cost() and back.items() == progress.items()
    assert back.breaker_verdicts() == progress.breaker_verdicts()


def test_a_progress_configmap_of_the_single_part_format_still_loads() -> None:
    progress = RunProgress("plants", 4)
    for shard in range(4):
        progress.take(worst_report(shard, f"plants-{shard}", "done", vendors(3)), NOW)
    old = json.dumps(progress.snapshot())  # as controllers before parts wrote it
    back = restored([old])
    assert back.items() == progress.items() and back.vendors() == progress.vendors()


def test_reports_are_clipped_to_bounded_texts_at_intake() -> None:
    report = worst_report(0, "p", "failed", vendors(MAX_VENDORS + 10))
    assert len(report["vendors"]) == MAX_VENDORS
    assert max(len(f["key"]) + len(f["reason"]) for f in report["failedSample"]) <= 2048
    assert len(report["failedSample"]) <= 5 and len(report.get("error", "")) <= 1024
