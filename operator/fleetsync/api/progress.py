"""The wire format between a shard and its coordinator (``fleetsync run``'s local one, or the
controller): cumulative progress up, budgets and fleet-wide breaker verdicts down.

TypedDicts rather than models: these are parsed at a high rate on the coordinator's side and
the shapes are internal to fleetsync (both ends ship in one package version).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

__all__ = [
    "FINAL_STATES",
    "CheckpointWire",
    "CostWire",
    "FailedWire",
    "GrantWire",
    "ReplyWire",
    "ReportWire",
    "ShardState",
    "VendorWire",
]

ShardState = Literal["starting", "running", "done", "interrupted", "failed"]
# A shard's last report: its pod exits once the report is acknowledged.
FINAL_STATES: frozenset[str] = frozenset({"done", "interrupted", "failed"})


class CheckpointWire(TypedDict):
    watermark: int
    above: str
    counts: dict[str, int]


class VendorWire(TypedDict):
    name: str
    calls: int
    errors: int
    throttled: int
    p95Ms: float | None
    breaker: str
    breakerSince: float | None  # wall-clock epoch seconds
    breakerForced: bool  # Open because the coordinator said so, not by this shard's calls
    concurrency: int
    limitKey: str | None
    requestsPerSecond: float | None
    waiting: NotRequired[int]  # items held back by an open breaker
    # The rate its key runs at (the lowest any run sharing the key declares) and the rate
    # this vendor declares: when they differ, status says another run holds the key lower.
    rateInForce: NotRequired[float | None]
    rateDeclared: NotRequired[float | None]


class CostWire(TypedDict):
    vendorCalls: int
    sinkCalls: int
    writeUnits: float
    readUnits: float
    unprocessedItems: int
    throttles: int


class FailedWire(TypedDict):
    key: str
    reason: str
    attempts: int


class ReportWire(TypedDict):
    run: str
    shard: int
    pod: str
    # Counts up with every report of one pod: a coordinator ignores a report older than one
    # it already took from that pod (HTTP retries and slow paths reorder them).
    seq: int
    state: ShardState
    shardTotal: int | None  # items of this shard, once the inventory has been read to the end
    seen: int  # items of this shard read from the inventory so far
    checkpoint: CheckpointWire | None
    vendors: list[VendorWire]
    cost: CostWire
    failedSample: list[FailedWire]
    wants: dict[str, float]  # rate-limit key -> requests/s, for keys with work pending
    error: NotRequired[str]


class GrantWire(TypedDict):
    rate: float
    cycle: int
    residues: list[int]
    start: float
    until: float


class ReplyWire(TypedDict):
    # Per rate-limit key: the grants this shard may use, each valid in [start, until). The
    # longest-lived is the shard's *reservation* (see coordination.budgets): it goes on
    # being valid while the coordinator is unreachable.
    grants: dict[str, list[GrantWire]]
    breakers: dict[str, str]
    stop: bool
    resume: CheckpointWire | None
    # Per key granted: the rate in force, the lowest any holder of the key declares; below
    # the shard's own ``wants`` when another run declares less.
    rates: NotRequired[dict[str, float]]
