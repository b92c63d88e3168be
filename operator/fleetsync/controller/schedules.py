"""The SyncSchedule reconcile: a pure decision and the thin code that carries it out.

``plan_schedule(spec, status, runs, now, ...)`` returns a ``ScheduleDecision`` — runs to
create, runs to delete, events, the new status — from the schedule's spec and status, its
runs in the cache and the (injected) time. ``apply_schedule`` makes the API match it. Only
the applier calls the API, so every policy (Allow/Forbid/Replace, suspend, run-now, history
limits, active window, starting deadline) is unit-tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from fleetsync.api.constants import (
    ANNOTATION_RUN_NOW,
    ANNOTATION_SCHEDULED_TIME,
    API_VERSION,
    Phase,
)
from fleetsync.api.v1alpha1.status import Condition
from fleetsync.api.v1alpha1.syncschedule import SyncScheduleSpec, SyncScheduleStatus
from fleetsync.controller.build import run_labels
from fleetsync.controller.cache import Body, Key
from fleetsync.controller.conditions import merge_conditions
from fleetsync.controller.kube import Kube
from fleetsync.controller.metrics import ControllerMetrics
from fleetsync.controller.objects import SyncJobObject, SyncScheduleObject
from fleetsync.controller.observe import TERMINAL, parse_time, rfc3339
from fleetsync.controller.schedule import NeverFires, due_tick, next_tick, run_name, run_now_name

__all__ = [
    "NewRun",
    "ScheduleDecision",
    "ScheduleEvent",
    "apply_schedule",
    "plan_invalid",
    "plan_schedule",
    "run_body",
    "spec_errors",
    "status_changed",
]

INVALID_SPEC = "InvalidSpec"
_KNOWN = frozenset(field.alias or name for name, field in SyncScheduleStatus.model_fields.items())


@dataclass(frozen=True, slots=True)
class ScheduleEvent:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True, slots=True)
class NewRun:
    name: str
    body: SyncJobObject
    announce: bool  # a RunCreated event once created (scheduled runs, not run-now)


@dataclass(frozen=True, slots=True)
class ScheduleDecision:
    """What to do, in order: delete ``replace``, create ``create``, post ``events``,
    delete ``prune`` (history limits), write ``status``."""

    create: list[NewRun] = field(default_factory=list)
    replace: list[str] = field(default_factory=list)
    prune: list[str] = field(default_factory=list)
    events: list[ScheduleEvent] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def run_body(
    schedule: SyncScheduleObject, spec: SyncScheduleSpec, name: str, tick: float
) -> SyncJobObject:
    """A SyncJob from the schedule's template, owned by the schedule."""
    meta = schedule["metadata"]
    template = spec.job_template
    return {
        "apiVersion": API_VERSION,
        "kind": "SyncJob",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {**template.metadata.labels, **run_labels(name, meta["name"])},
            "annotations": {
                **template.metadata.annotations,
                ANNOTATION_SCHEDULED_TIME: rfc3339(tick),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "SyncSchedule",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def _phase(run: SyncJobObject) -> Any:
    return (run.get("status") or {}).get("phase")


def _run_now(
    schedule: SyncScheduleObject,
    spec: SyncScheduleSpec,
    runs: Sequence[SyncJobObject],
    now: float,
    status: dict[str, Any],
    decision: ScheduleDecision,
) -> None:
    """``fleetsync.dev/run-now``: one run per new annotation value (fixed name → 409 on repeat)."""
    request = (schedule["metadata"].get("annotations") or {}).get(ANNOTATION_RUN_NOW)
    if not request:
        return
    name = run_now_name(schedule["metadata"]["name"], request)
    if any(r["metadata"]["name"] == name for r in runs) or status.get("lastRunNow") == request:
        return
    decision.create.append(NewRun(name, run_body(schedule, spec, name, now), announce=False))
    status["lastRunNow"] = request


def _scheduled(
    schedule: SyncScheduleObject,
    spec: SyncScheduleSpec,
    active: Sequence[SyncJobObject],
    now: float,
    status: dict[str, Any],
    decision: ScheduleDecision,
) -> float:
    """The due tick, if any, under the concurrency policy; returns the last scheduled time.
    Raises ``NeverFires`` before changing anything."""
    last = (
        parse_time(status.get("lastScheduleTime"))
        or parse_time(schedule["metadata"].get("creationTimestamp"))
        or now
    )
    tick = None if spec.suspend else due_tick(spec, last, now)
    if tick is None:
        return last
    status["lastScheduleTime"] = rfc3339(tick.time)
    status["missed"] = int(status.get("missed") or 0) + tick.missed
    if not tick.in_window:
        status["skippedOutsideWindow"] = int(status.get("skippedOutsideWindow") or 0) + 1
    elif active and spec.concurrency_policy == "Forbid":
        status["missed"] = int(status["missed"]) + 1
        decision.events.append(
            ScheduleEvent("RunSkipped", "previous run still active (concurrencyPolicy Forbid)")
        )
    else:
        if active and spec.concurrency_policy == "Replace":
            decision.replace.extend(r["metadata"]["name"] for r in active)
        name = run_name(schedule["metadata"]["name"], tick.time)
        decision.create.append(NewRun(name, run_body(schedule, spec, name, tick.time), True))
    return last


def _history(spec: SyncScheduleSpec, runs: Sequence[SyncJobObject]) -> list[str]:
    """Finished runs past the history limits, oldest first."""
    finished = [r for r in runs if _phase(r) in TERMINAL]
    ok = [r for r in finished if _phase(r) != Phase.FAILED]
    failed = [r for r in finished if _phase(r) == Phase.FAILED]
    doomed: list[str] = []
    for group, limit in (
        (ok, spec.successful_jobs_history_limit),
        (failed, spec.failed_jobs_history_limit),
    ):
        doomed.extend(r["metadata"]["name"] for r in group[: max(0, len(group) - limit)])
    return doomed


def plan_schedule(
    schedule: SyncScheduleObject, spec: SyncScheduleSpec, runs: Sequence[SyncJobObject], now: float
) -> ScheduleDecision:
    """Everything one reconcile of ``schedule`` does, given its runs (oldest first)."""
    namespace = schedule["metadata"]["namespace"]
    status = dict(schedule.get("status") or {})
    decision = ScheduleDecision(status=status)
    active = [r for r in runs if _phase(r) not in TERMINAL]
    _run_now(schedule, spec, runs, now, status, decision)
    problem: str | None = None
    try:
        last = _scheduled(schedule, spec, active, now, status, decision)
        upcoming = None if spec.suspend else rfc3339(next_tick(spec, max(now, last)))
    except NeverFires as error:
        problem, upcoming = str(error), None
    decision.prune.extend(_history(spec, runs))
    succeeded = [
        parse_time((r.get("status") or {}).get("completionTime"))
        for r in runs
        if _phase(r) in (Phase.SUCCEEDED, Phase.PARTIALLY_SUCCEEDED)
    ]
    times = [t for t in succeeded if t is not None]
    if times:
        status["lastSuccessfulTime"] = rfc3339(max(times))
    status["nextScheduleTime"] = upcoming
    replaced = set(decision.replace)
    status["active"] = [
        {"name": r["metadata"]["name"], "namespace": namespace, "uid": r["metadata"]["uid"]}
        for r in active
        if r["metadata"]["name"] not in replaced
    ] + [{"name": run.name, "namespace": namespace} for run in decision.create]
    status["activeCount"] = len(status["active"])
    _health(schedule, status, decision, problem=problem, suspended=spec.suspend, now=now)
    return decision


def plan_invalid(schedule: SyncScheduleObject, problem: str, now: float) -> ScheduleDecision:
    """A spec that fails validation: no runs, no next run; Stalled, and one Warning event
    per spec generation."""
    status = dict(schedule.get("status") or {})
    status["nextScheduleTime"] = None
    status.setdefault("active", [])
    status["activeCount"] = len(status["active"])
    decision = ScheduleDecision(status=status)
    _health(schedule, status, decision, problem=problem, suspended=False, now=now)
    return decision


def spec_errors(error: ValidationError) -> str:
    """Each failing field of a SyncSchedule spec, by its path, with the reason."""
    return "; ".join(
        "spec." + ".".join(str(part) for part in e["loc"]) + ": " + e["msg"] for e in error.errors()
    )[:1024]


def _condition(kind: str, true: bool, reason: str, message: str = "") -> Condition:
    return Condition(type=kind, status="True" if true else "False", reason=reason, message=message)


def _health(
    schedule: SyncScheduleObject,
    status: dict[str, Any],
    decision: ScheduleDecision,
    *,
    problem: str | None,
    suspended: bool,
    now: float,
) -> None:
    """Ready / Stalled / Suspended (kstatus: Stalled → Failed; otherwise Current), stamped
    with the spec generation; a Warning event once per generation for a bad spec."""
    generation = schedule["metadata"].get("generation")
    old = [Condition.model_validate(c) for c in status.get("conditions") or []]
    if problem is not None:
        new = [
            _condition("Ready", False, INVALID_SPEC, problem),
            _condition("Stalled", True, INVALID_SPEC, problem),
        ]
        warned = any(
            c.type == "Stalled" and c.status == "True" and c.observed_generation == generation
            for c in old
        )
        if not warned:
            decision.events.append(ScheduleEvent(INVALID_SPEC, problem, warning=True))
    elif suspended:
        message = "suspended: no runs are scheduled"
        new = [
            _condition("Ready", True, "Suspended", message),
            _condition("Stalled", False, "Valid"),
        ]
    else:
        upcoming = status.get("nextScheduleTime")
        new = [
            _condition("Ready", True, "Scheduled", f"next run at {upcoming}"),
            _condition("Stalled", False, "Valid"),
        ]
    if suspended:
        new.append(_condition("Suspended", True, "Suspended", "suspended: no runs are scheduled"))
    else:
        new.append(_condition("Suspended", False, "Active", "runs are scheduled"))
    merged = merge_conditions(old, new, generation=generation, now=rfc3339(now))
    status["conditions"] = [c.model_dump(mode="json", by_alias=True) for c in merged]
    status["observedGeneration"] = generation


async def apply_schedule(
    kube: Kube,
    metrics: ControllerMetrics,
    schedule: SyncScheduleObject,
    key: Key,
    decision: ScheduleDecision,
) -> None:
    """Carry ``decision`` out; a run that already existed (409) is not listed as created."""
    for name in decision.replace:
        await kube.delete_syncjob(key[0], name)
    refused: set[str] = set()
    for run in decision.create:
        if not await kube.create(run.body):
            refused.add(run.name)
        elif run.announce:
            message = f"created SyncJob {run.name}"
            await kube.event(schedule, "SyncSchedule", "RunCreated", message, warning=False)
    for event in decision.events:
        await kube.event(
            schedule, "SyncSchedule", event.reason, event.message, warning=event.warning
        )
    for name in decision.prune:
        await kube.delete_syncjob(key[0], name)
    status = dict(decision.status)
    status["active"] = [a for a in status["active"] if "uid" in a or a["name"] not in refused]
    status["activeCount"] = len(status["active"])
    metrics.observe_schedule(key[1], key[0], status)
    if status_changed(status, schedule.get("status") or {}):
        await kube.patch_schedule_status(*key, status)


def status_changed(new: Body, stored: Body) -> bool:
    """Whether ``new`` differs from what the API server stored. A merge patch's nulls
    remove fields, and fields the CRD's schema does not know are pruned by the API server:
    neither may cause a write on every tick."""
    wanted = {k: v for k, v in new.items() if v is not None and (k in stored or k in _KNOWN)}
    return wanted != {k: v for k, v in stored.items() if v is not None}
