"""Fold shard reports into one run's progress, and judge each vendor fleet-wide.

Reports are cumulative. Items are counted by each shard's checkpoint, which a replacement
pod inherits, so a restart never counts an item twice. Calls and costs restart at zero in a
new pod, so the last report of a superseded pod is kept as *retired* and added in. Only the
newest pod of a shard may report; a zombie predecessor is told to stop.

Progress never goes backwards, whatever order reports arrive in:

- a pod's reports carry ``seq``; one not above the last taken from that pod is ignored (an
  HTTP retry or a slow path delivered it late);
- a ``starting`` report carries no progress (the pod has not been told where to resume yet):
  it never replaces the stored checkpoint, which is what the reply hands back as ``resume``;
- a checkpoint replaces the stored one only if no count goes down. A replacement resumed
  from the stored checkpoint always qualifies; one that could not be told (it started from
  scratch) is taken once it has caught up, or with its ``done`` report, which is complete.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from fleetsync.api.constants import BreakerState, ItemOutcome
from fleetsync.api.progress import (
    MAX_CAUSES,
    SNAPSHOT_CAUSES,
    CheckpointWire,
    ErrorWire,
    FailedWire,
    ReportWire,
    VendorWire,
    bound_causes,
    diverse_sample,
)
from fleetsync.api.v1alpha1.status import (
    Cost,
    FailedItem,
    FailureCause,
    ItemCounts,
    VendorStatus,
)
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec

__all__ = ["Intake", "RunProgress", "ShardView", "expected_total"]


def expected_total(spec: SyncJobSpec) -> int | None:
    inventory = spec.fleet.inventory
    if inventory.generate is not None:
        return inventory.generate.count
    if inventory.inline is not None:
        return len(inventory.inline)
    return None


class Intake(Enum):
    """What became of a report."""

    TAKEN = "taken"
    STALE = "stale"  # older than one already taken from its pod: ignored
    SUPERSEDED = "superseded"  # from a pod this shard has replaced: it must stop


@dataclass(slots=True)
class ShardView:
    pod: str
    state: str = "starting"
    report: ReportWire | None = None
    updated: float = 0.0
    seq: int = 0  # the last report sequence taken from ``pod``


def _advances(stored: CheckpointWire | None, new: CheckpointWire, *, complete: bool) -> bool:
    if stored is None:
        return True
    before, after = stored["counts"], new["counts"]
    if all(after.get(k, 0) >= v for k, v in before.items()):
        return True
    # A shard that started from scratch (it never heard where to resume) may count some
    # items differently the second time; its complete account replaces the partial one.
    return complete and sum(after.values()) >= sum(before.values())


@dataclass(slots=True)
class _Retired:
    cost: Counter[str] = field(default_factory=Counter)
    vendors: dict[str, Counter[str]] = field(default_factory=dict)
    causes: Counter[str] = field(default_factory=Counter)


class RunProgress:
    def __init__(self, run: str, shards: int, *, expected_total: int | None = None) -> None:
        self.run = run
        self.shards = shards
        self.expected_total = expected_total
        self.views: dict[int, ShardView] = {}
        self._retired = _Retired()
        self._checkpoints: dict[int, CheckpointWire] = {}
        self._breaker_since: dict[str, float] = {}
        self._replaced: dict[int, set[str]] = {}  # pods each shard has replaced
        # Items already final in checkpoints restored from an earlier coordinator.
        self.resumed = 0

    # --- intake ----------------------------------------------------------------------------

    def accept(self, report: ReportWire, now: float) -> bool:
        """Take a report; False when it comes from a pod this shard has since replaced."""
        return self.take(report, now) is not Intake.SUPERSEDED

    def take(self, report: ReportWire, now: float) -> Intake:
        """Fold a report in, unless it is stale or from a replaced pod (see the docstring)."""
        shard, pod = report["shard"], report["pod"]
        view = self.views.get(shard)
        if pod in self._replaced.get(shard, ()):
            return Intake.SUPERSEDED
        if report["state"] == "starting":
            if view is None or view.pod != pod:
                self._replace(shard, view, pod)
            else:
                view.updated = now  # the same pod saying hello again: nothing to fold
            return Intake.TAKEN
        if view is None:
            view = self.views[shard] = ShardView(pod=pod)  # a restarted coordinator's first
        elif view.pod != pod:
            return Intake.SUPERSEDED
        seq = report.get("seq")
        if seq is not None:
            if seq <= view.seq:
                return Intake.STALE
            view.seq = seq
        view.report = report
        view.state = report["state"]
        view.updated = now
        checkpoint = report["checkpoint"]
        if checkpoint is not None and _advances(
            self._checkpoints.get(shard), checkpoint, complete=report["state"] == "done"
        ):
            self._checkpoints[shard] = checkpoint
        return Intake.TAKEN

    def _replace(self, shard: int, view: ShardView | None, pod: str) -> None:
        if view is not None:
            self._replaced.setdefault(shard, set()).add(view.pod)
            if view.report is not None:
                self._retire(view.report)
        self.views[shard] = ShardView(pod=pod)

    def _retire(self, report: ReportWire) -> None:
        self._retired.cost.update(dict(report["cost"]))
        causes = self._retired.causes
        causes.update(report.get("causes") or {})
        if len(causes) > MAX_CAUSES + 1:  # many replaced pods: stay bounded, totals kept
            self._retired.causes = Counter(bound_causes(causes, MAX_CAUSES))
        for vendor in report["vendors"]:
            counts = self._retired.vendors.setdefault(vendor["name"], Counter())
            counts.update(
                calls=vendor["calls"], errors=vendor["errors"], throttled=vendor["throttled"]
            )

    # --- persistence ---------------------------------------------------------------------

    def snapshot(self, sample_per_shard: int = 5) -> dict[str, Any]:
        """A JSON-able copy the controller keeps in the run's progress ConfigMap, so a
        restarted controller resumes shards from their checkpoints and counts nothing twice.
        Failed-item samples are trimmed: the full list lives in the sink."""
        views = {}
        for shard, view in self.views.items():
            report = None
            if view.report is not None:
                report = {
                    **view.report,
                    "failedSample": view.report["failedSample"][:sample_per_shard],
                }
                if view.report.get("causes"):
                    causes = view.report.get("causes") or {}
                    report["causes"] = bound_causes(causes, SNAPSHOT_CAUSES)
            views[str(shard)] = {
                "pod": view.pod,
                "state": view.state,
                "report": report,
                "updated": view.updated,
                "seq": view.seq,
            }
        return {
            "views": views,
            "checkpoints": {str(k): v for k, v in self._checkpoints.items()},
            "replaced": {str(k): sorted(v) for k, v in self._replaced.items()},
            "retired": {
                "cost": dict(self._retired.cost),
                "vendors": {k: dict(v) for k, v in self._retired.vendors.items()},
                "causes": bound_causes(self._retired.causes, SNAPSHOT_CAUSES),
            },
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        for shard, view in snapshot.get("views", {}).items():
            self.views[int(shard)] = ShardView(
                pod=view["pod"],
                state=view["state"],
                report=view["report"],
                updated=view["updated"],
                seq=view.get("seq", 0),
            )
        for shard, checkpoint in snapshot.get("checkpoints", {}).items():
            self._checkpoints[int(shard)] = checkpoint
        for shard, pods in snapshot.get("replaced", {}).items():
            self._replaced.setdefault(int(shard), set()).update(pods)
        self.resumed = sum(sum(c["counts"].values()) for c in self._checkpoints.values())
        retired = snapshot.get("retired", {})
        self._retired.cost.update(retired.get("cost", {}))
        for name, counts in retired.get("vendors", {}).items():
            self._retired.vendors.setdefault(name, Counter()).update(counts)
        self._retired.causes.update(retired.get("causes", {}))

    def resume_for(self, shard: int) -> CheckpointWire | None:
        return self._checkpoints.get(shard)

    # --- views -----------------------------------------------------------------------------

    @property
    def done_shards(self) -> int:
        return sum(1 for v in self.views.values() if v.state == "done")

    @property
    def finished(self) -> bool:
        return self.done_shards == self.shards

    def items(self) -> ItemCounts:
        counts: Counter[str] = Counter()
        for checkpoint in self._checkpoints.values():
            counts.update(checkpoint["counts"])
        totals = [v.report["shardTotal"] if v.report else None for v in self.views.values()]
        if len(totals) == self.shards and all(t is not None for t in totals):
            total = sum(t for t in totals if t is not None)
        elif self.expected_total is not None:
            total = self.expected_total
        else:
            total = sum(v.report["seen"] if v.report else 0 for v in self.views.values())
        final = sum(counts.values())
        return ItemCounts(
            total=total,
            synced=counts[ItemOutcome.SYNCED],
            unchanged=counts[ItemOutcome.UNCHANGED],
            fresh=counts[ItemOutcome.FRESH],
            stale=counts[ItemOutcome.STALE],
            failed=counts[ItemOutcome.FAILED],
            remaining=max(0, total - final),
        )

    def _live_vendors(self) -> list[VendorWire]:
        return [vendor for v in self.views.values() if v.report for vendor in v.report["vendors"]]

    def vendors(self) -> list[VendorStatus]:
        merged: dict[str, dict[str, float]] = {}
        breakers: dict[str, BreakerState] = {}
        p95: dict[str, float] = {}
        concurrency: Counter[str] = Counter()
        rates: dict[str, float] = {}
        waiting: Counter[str] = Counter()
        since: dict[str, float] = {}  # the earliest a shard saw the vendor's breaker leave Closed
        held: dict[str, str] = {}  # vendor -> why its key runs below what it declares
        for vendor in self._live_vendors():
            name = vendor["name"]
            totals = merged.setdefault(name, {"calls": 0, "errors": 0, "throttled": 0})
            totals["calls"] += vendor["calls"]
            totals["errors"] += vendor["errors"]
            totals["throttled"] += vendor["throttled"]
            if vendor["p95Ms"] is not None:
                p95[name] = max(p95.get(name, 0.0), vendor["p95Ms"])
            concurrency[name] += vendor["concurrency"]
            if vendor["requestsPerSecond"] is not None:
                rates[name] = rates.get(name, 0.0) + vendor["requestsPerSecond"]
            breakers[name] = _worse(breakers.get(name, BreakerState.CLOSED), vendor["breaker"])
            waiting[name] += vendor.get("waiting", 0)
            note = _held_lower(vendor)
            if note is not None:
                held[name] = note
            left_closed = vendor["breakerSince"]
            if vendor["breaker"] != BreakerState.CLOSED and left_closed is not None:
                since[name] = min(since.get(name, left_closed), left_closed)
        for name, counts in self._retired.vendors.items():
            totals = merged.setdefault(name, {"calls": 0, "errors": 0, "throttled": 0})
            for k in ("calls", "errors", "throttled"):
                totals[k] += counts[k]
        return [
            VendorStatus(
                name=name,
                breaker=breakers.get(name, BreakerState.CLOSED),
                since=datetime.fromtimestamp(since[name], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                if name in since
                else None,
                calls=int(totals["calls"]),
                errors=int(totals["errors"]),
                throttled=int(totals["throttled"]),
                p95_ms=p95.get(name),
                concurrency=concurrency.get(name),
                requests_per_second=round(rates[name], 3) if name in rates else None,
                waiting=waiting[name] or None,
                rate_limit=held.get(name),
            )
            for name, totals in sorted(merged.items())
        ]

    def breaker_verdicts(self) -> dict[str, str]:
        """Fleet-wide: a vendor any live shard finds Open by its own calls is Open for all."""
        verdicts: dict[str, str] = {}
        for vendor in self._live_vendors():
            if vendor["breaker"] == BreakerState.OPEN and not vendor["breakerForced"]:
                verdicts[vendor["name"]] = BreakerState.OPEN
            else:
                verdicts.setdefault(vendor["name"], BreakerState.CLOSED)
        return verdicts

    def cost(self) -> Cost:
        totals: Counter[str] = Counter(self._retired.cost)
        for view in self.views.values():
            if view.report:
                totals.update(dict(view.report["cost"]))
        return Cost(
            vendor_calls=int(totals["vendorCalls"]),
            sink_calls=int(totals["sinkCalls"]),
            write_units=float(totals["writeUnits"]),
            read_units=float(totals["readUnits"]),
        )

    def failed_sample(self, limit: int = 20) -> list[FailedItem]:
        sample: list[FailedWire] = []
        for view in sorted(self.views.values(), key=lambda v: v.pod):
            if view.report:
                sample.extend(view.report["failedSample"])
        return [
            FailedItem(key=f["key"], reason=f["reason"], attempts=f["attempts"])
            for f in diverse_sample(sample, limit)
        ]

    def last_error(self) -> str | None:
        """The error of the shard that reported one last (a failed shard says why)."""
        reported = [
            (view.updated, view.report["error"])
            for view in self.views.values()
            if view.report is not None and view.report.get("error")
        ]
        return max(reported)[1] if reported else None

    def config_error(self) -> ErrorWire | None:
        """The configuration error of the shard that reported one last, field by field."""
        reported = [
            (view.updated, view.pod, view.report["errorDetail"])
            for view in self.views.values()
            if view.report is not None and "errorDetail" in view.report
        ]
        return max(reported, key=lambda r: (r[0], r[1]))[2] if reported else None

    def failure_causes(self, limit: int = MAX_CAUSES) -> list[FailureCause]:
        """Every failure of the run counted by cause (api.progress.cause_of), most frequent
        first; past ``limit`` causes the rest are summed as ``other``."""
        totals: Counter[str] = Counter(self._retired.causes)
        for view in self.views.values():
            if view.report:
                totals.update(view.report.get("causes") or {})
        ranked = bound_causes(totals, limit)
        return [FailureCause(cause=c, count=n) for c, n in ranked.items()]


def _held_lower(vendor: VendorWire) -> str | None:
    """Why a vendor's key runs below the rate it declares (another run sharing the key
    declares less: a key always runs at the lowest), or None."""
    in_force, declared = vendor.get("rateInForce"), vendor.get("rateDeclared")
    if in_force is None or declared is None or in_force >= declared:
        return None
    return (
        f"key {vendor['limitKey']} runs at {in_force:g}/s, the lowest rate a run sharing it "
        f"declares; this run declares {declared:g}/s"
    )


def _worse(current: BreakerState, reported: str) -> BreakerState:
    order = [BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN]
    state = BreakerState(reported) if reported in order else BreakerState.CLOSED
    return max(current, state, key=order.index)
