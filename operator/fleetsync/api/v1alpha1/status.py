"""SyncJob status: what a run reports to humans (phase, progress) and machines (conditions).

The worker's cumulative counters, the local runner's summary and the controller's status
write all use these shapes, so `fleetsync run --output json` and `kubectl get -o json`
agree field for field.
"""

from __future__ import annotations

from pydantic import Field

from fleetsync.api.constants import BreakerState, Phase
from fleetsync.api.v1alpha1._base import Model


class Condition(Model):
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class ShardCounts(Model):
    total: int = 0
    active: int = 0
    succeeded: int = 0
    failed: int = 0


class ItemCounts(Model):
    total: int = 0
    synced: int = 0
    unchanged: int = 0
    fresh: int = 0
    stale: int = 0
    failed: int = 0
    remaining: int = 0


class Throughput(Model):
    items_per_second: float = 0.0


class VendorStatus(Model):
    name: str
    breaker: BreakerState = BreakerState.CLOSED
    since: str | None = None
    calls: int = 0
    errors: int = 0
    throttled: int = 0
    p95_ms: float | None = None
    concurrency: int | None = None
    requests_per_second: float | None = Field(None, description="The budget in force.")
    waiting: int | None = Field(
        None, description="Items waiting for this vendor's breaker to close (not failed)."
    )
    rate_limit: str | None = Field(
        None,
        description="Set when runs sharing this vendor's rateLimit.key declare different "
        "rates: the key runs at the lowest, and this says which and why.",
    )


class Cost(Model):
    vendor_calls: int = 0
    sink_calls: int = 0
    write_units: float = 0.0
    read_units: float = 0.0


class ObjectRef(Model):
    kind: str = "ConfigMap"
    name: str


class FailedItem(Model):
    key: str
    reason: str
    attempts: int | None = None


class FailureCause(Model):
    cause: str = Field(description="A dead letter's reason without its per-item details.")
    count: int = Field(description="Items dead-lettered for it (exact).")


class FailedItems(Model):
    count: int = 0
    ref: ObjectRef | None = None
    sample: list[FailedItem] = Field(default_factory=list, max_length=20)
    causes: list[FailureCause] = Field(
        default_factory=list,
        max_length=17,
        description="Every failure counted by cause, most frequent first: the vendor and "
        "the HTTP status or error class (e.g. `sungrow: HTTP 503`, `sungrow: connection "
        "refused`). At most 16 causes; the rest are counted as `other`.",
    )


class Plan(Model):
    shards: int
    parallelism: int
    reason: str


class JobRef(Model):
    name: str


class SyncJobStatus(Model):
    phase: Phase = Phase.PENDING
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    start_time: str | None = None
    completion_time: str | None = None
    duration_seconds: float | None = None
    duration: str | None = Field(
        None, description="durationSeconds as `kubectl get jobs` shows it."
    )
    progress: str | None = Field(None, description="synced/total, for `kubectl get`.")
    shards: ShardCounts | None = None
    items: ItemCounts | None = None
    throughput: Throughput | None = None
    estimated_completion_time: str | None = None
    vendors: list[VendorStatus] = Field(default_factory=list)
    cost: Cost | None = None
    failed_items: FailedItems | None = None
    plan: Plan | None = None
    job_ref: JobRef | None = None
