"""A shard's report says how many items it still has to fetch under each rate-limit key —
once it has read its inventory to the end (before that it cannot know, and says nothing) —
so a coordinator can divide a run's share of the key by it (coordination.budgets)."""

from __future__ import annotations

from pathlib import Path

from fleetsync.api.v1alpha1 import SyncJobSpec
from fleetsync.worker.plan import ShardPlan
from fleetsync.worker.reporting import ShardProgress, backlog_of, shard_report, wants_of
from fleetsync.worker.vendors import VendorRuntime

SPEC = SyncJobSpec.model_validate(
    {
        "fleet": {"inventory": {"generate": {"count": 1, "idTemplate": "p-{i}"}}},
        "source": {
            "http": {"url": "http://vendor.test/plants/{id}"},
            "rateLimit": {"requestsPerSecond": 25, "key": "shared"},
        },
    }
)


def vendors(**pending: int) -> list[VendorRuntime]:
    out = []
    for name, count in pending.items():
        runtime = VendorRuntime(name, SPEC.source, limiter=None)
        runtime.pending = count
        out.append(runtime)
    return out


def test_the_backlog_sums_pending_items_per_key_once_the_inventory_is_read() -> None:
    fleet = vendors(a=40, b=2, c=0)
    assert {v.limit_key for v in fleet} == {"shared"}
    assert backlog_of(fleet, inventory_read=False) == {}
    assert backlog_of(fleet, inventory_read=True) == {"shared": 42}


def test_a_report_carries_the_backlog_of_the_keys_it_wants_only() -> None:
    plan = ShardPlan(run="r", shard=0, shards=1, pod="p-0", base_dir=Path("."))
    fleet = vendors(a=3)
    wants = wants_of(fleet, inventory_read=True)
    report = shard_report(
        plan, seq=1, state="running", progress=ShardProgress(3, 3, None),
        wants=wants, backlog={"shared": 3, "elsewhere": 9},
    )  # fmt: skip
    assert report["wants"] == {"shared": 25.0} and report["backlog"] == {"shared": 3}
    unread = shard_report(
        plan, seq=2, state="running", progress=ShardProgress(3, None, None), wants=wants
    )
    assert "backlog" not in unread
