"""Status during an outage: the vendor's breaker Open, since when, and how many items wait."""

from __future__ import annotations

import re
from pathlib import Path

from fleetsync.api.constants import BreakerState
from fleetsync.api.v1alpha1 import SyncJobSpec
from fleetsync.coordination.progress import RunProgress
from fleetsync.worker.plan import ShardPlan
from fleetsync.worker.reporting import ShardProgress, shard_report
from fleetsync.worker.vendors import VendorRuntime

ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
SPEC = SyncJobSpec.model_validate(
    {
        "fleet": {"inventory": {"generate": {"count": 1, "idTemplate": "p-{i}"}}},
        "source": {"http": {"url": "http://vendor.test/plants/{id}"}},
    }
)


def vendor(name: str, *, pending: int, fetching: int, open_: bool) -> VendorRuntime:
    runtime = VendorRuntime(name, SPEC.source, limiter=None)
    runtime.pending, runtime.fetching = pending, fetching
    if open_:
        runtime.breaker.force(BreakerState.OPEN)
    return runtime


def test_waiting_counts_only_items_held_back_by_a_breaker_that_is_not_closed() -> None:
    down = vendor("sungrow", pending=40, fetching=3, open_=True)
    up = vendor("huawei", pending=40, fetching=3, open_=False)
    assert down.waiting == 37 and down.wire()["waiting"] == 37
    assert up.waiting == 0 and up.wire()["waiting"] == 0


def test_status_folds_the_shards_waiting_items_and_the_earliest_since() -> None:
    progress = RunProgress("r", 2)
    for shard, (pending, open_) in enumerate([(12, True), (5, True)]):
        plan = ShardPlan(run="r", shard=shard, shards=2, pod=f"p-{shard}", base_dir=Path("."))
        vendors = [
            vendor("sungrow", pending=pending, fetching=0, open_=open_).wire(),
            vendor("huawei", pending=9, fetching=9, open_=False).wire(),
        ]
        report = shard_report(
            plan, seq=1, state="running", progress=ShardProgress(0, None, None), vendors=vendors
        )
        progress.take(report, now=0.0)
    by_name = {v.name: v for v in progress.vendors()}
    sungrow, huawei = by_name["sungrow"], by_name["huawei"]
    assert sungrow.breaker is BreakerState.OPEN and sungrow.waiting == 17
    assert sungrow.since is not None and re.fullmatch(ISO_UTC, sungrow.since)
    assert huawei.breaker is BreakerState.CLOSED and huawei.waiting is None
    assert huawei.since is None
    assert sungrow.to_wire()["waiting"] == 17
