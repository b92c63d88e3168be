"""The controller's ``/metrics``: SyncJobs by phase, each owner's latest run, reconciles.

Labels are namespace, owner (SyncSchedule, or SyncJob when unscheduled), vendor, phase,
outcome and kind — never a run, pod or item name — so the series count stays flat as
schedules create run after run.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fleetsync.api.constants import Phase
from fleetsync.controller.observe import parse_time
from fleetsync.metrics import BREAKER_VALUES

__all__ = ["ControllerMetrics"]


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.syncjobs = Gauge(
            "fleetsync_syncjobs", "SyncJobs by phase.", ["namespace", "phase"], registry=r
        )
        self.run_items = Gauge(
            "fleetsync_run_items",
            "Items of the owner's current or latest run, by outcome.",
            ["namespace", "owner", "outcome"],
            registry=r,
        )
        self.run_vendor_calls = Gauge(
            "fleetsync_run_vendor_calls",
            "Vendor calls of the owner's current or latest run.",
            ["namespace", "owner", "vendor"],
            registry=r,
        )
        self.run_vendor_throttled = Gauge(
            "fleetsync_run_vendor_throttled",
            "429 answers of a vendor in the owner's current or latest run.",
            ["namespace", "owner", "vendor"],
            registry=r,
        )
        self.schedule_missed = Gauge(
            "fleetsync_schedule_missed_runs",
            "Ticks a SyncSchedule did not run (controller away, deadline passed, Forbid).",
            ["namespace", "owner"],
            registry=r,
        )
        self.schedule_last_success = Gauge(
            "fleetsync_schedule_last_success_timestamp_seconds",
            "When the schedule's latest successful run finished.",
            ["namespace", "owner"],
            registry=r,
        )
        self.run_breaker = Gauge(
            "fleetsync_run_breaker_state",
            "Fleet-wide breaker of a vendor: 0 closed, 1 half-open, 2 open.",
            ["namespace", "owner", "vendor"],
            registry=r,
        )
        self.run_duration = Gauge(
            "fleetsync_run_duration_seconds",
            "Duration of the owner's current or latest run.",
            ["namespace", "owner"],
            registry=r,
        )
        self.run_failed = Gauge(
            "fleetsync_run_failed",
            "1 when the owner's latest run Failed.",
            ["namespace", "owner"],
            registry=r,
        )
        self.reconcile = Histogram(
            "fleetsync_reconcile_duration_seconds",
            "Time to reconcile one object.",
            ["kind"],
            registry=r,
        )
        self.reports = Counter(
            "fleetsync_worker_reports",
            "Worker progress reports, by result.",
            ["result"],
            registry=r,
        )

    def observe_phases(self, syncjobs: Iterable[Mapping[str, Any]]) -> None:
        counts: Tally[tuple[str, str]] = Tally()
        namespaces: set[str] = set()
        for body in syncjobs:
            namespace = body["metadata"].get("namespace", "")
            namespaces.add(namespace)
            phase = (body.get("status") or {}).get("phase") or Phase.PENDING.value
            counts[(namespace, phase)] += 1
        for namespace in namespaces:
            for phase in Phase:
                self.syncjobs.labels(namespace, phase.value).set(counts[(namespace, phase.value)])

    def observe_run(self, owner: str, namespace: str, status: Mapping[str, Any]) -> None:
        for outcome, value in (status.get("items") or {}).items():
            self.run_items.labels(namespace, owner, outcome).set(value)
        for vendor in status.get("vendors") or []:
            self.run_vendor_calls.labels(namespace, owner, vendor["name"]).set(vendor["calls"])
            self.run_vendor_throttled.labels(namespace, owner, vendor["name"]).set(
                vendor["throttled"]
            )
            self.run_breaker.labels(namespace, owner, vendor["name"]).set(
                BREAKER_VALUES.get(vendor["breaker"], 0)
            )
        if status.get("durationSeconds") is not None:
            self.run_duration.labels(namespace, owner).set(status["durationSeconds"])
        self.run_failed.labels(namespace, owner).set(1 if status.get("phase") == "Failed" else 0)

    def observe_schedule(self, owner: str, namespace: str, status: Mapping[str, Any]) -> None:
        self.schedule_missed.labels(namespace, owner).set(int(status.get("missed") or 0))
        last = status.get("lastSuccessfulTime")
        if last:
            self.schedule_last_success.labels(namespace, owner).set(parse_time(last) or 0)
