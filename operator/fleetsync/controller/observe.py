"""From what the cluster shows (the Job, its pods) and what the workers reported, decide the
run's phase and write its status. Pure functions: the reconcile loop feeds them and writes
the result, so every row of API.md's condition table is unit-tested here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fleetsync.api.constants import FAILED_SAMPLE_MAX, Phase, Reason
from fleetsync.api.durations import human_duration
from fleetsync.api.v1alpha1.status import (
    Condition,
    FailedItems,
    FailureCause,
    ItemCounts,
    JobRef,
    Plan,
    ShardCounts,
    SyncJobStatus,
    Throughput,
)
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.controller.conditions import (
    Health,
    causes_text,
    conditions_for,
    merge_conditions,
)
from fleetsync.controller.objects import Job, Pod
from fleetsync.controller.plan import RunPlan
from fleetsync.coordination.phase import final_phase, too_many_failures
from fleetsync.coordination.progress import RunProgress

__all__ = [
    "TERMINAL",
    "Observation",
    "build_status",
    "job_condition",
    "observe",
    "parse_time",
    "phase_event",
    "pod_problem",
    "rfc3339",
    "stuck_creating",
]

TERMINAL = frozenset({Phase.SUCCEEDED, Phase.PARTIALLY_SUCCEEDED, Phase.FAILED})
# Container waiting reasons that will not fix themselves without a user's action.
_STUCK_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
    }
)


@dataclass(frozen=True, slots=True)
class Observation:
    phase: Phase
    reason: str
    message: str
    terminal: bool = False


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def job_condition(job: Job | None, kind: str) -> dict[str, Any] | None:
    for condition in (job or {}).get("status", {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def pod_problem(
    pods: Iterable[Pod],
    now: float,
    grace_seconds: float,
    warnings: Mapping[str, str] | None = None,
) -> str | None:
    """Why pods cannot start, once one has been stuck for ``grace_seconds``; else None.

    A kubelet reports a Secret or ConfigMap missing from an env reference, or an image it
    cannot pull, as a waiting reason; a volume it cannot mount leaves the container in
    ContainerCreating with a FailedMount warning event (``warnings``: pod uid -> message).
    Without this the run would stay Running forever.
    """
    for pod in pods:
        status = pod.get("status") or {}
        meta = pod.get("metadata") or {}
        created = parse_time(meta.get("creationTimestamp")) or now
        if now - created < grace_seconds:
            continue
        name = meta.get("name", "?")
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in _STUCK_REASONS:
                return f"pod {name}: {reason}: {waiting.get('message', '')}".strip()
            if reason == "ContainerCreating":
                warning = (warnings or {}).get(meta.get("uid", ""))
                if warning:
                    return f"pod {name}: {warning}"
    return None


def stuck_creating(pods: Iterable[Pod], now: float, grace_seconds: float) -> list[Pod]:
    """Pods still ContainerCreating after the grace period: worth reading their events."""
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        created = parse_time(meta.get("creationTimestamp")) or now
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") == "ContainerCreating" and now - created >= grace_seconds:
                out.append(pod)
                break
    return out


def observe(
    spec: SyncJobSpec,
    job: Job | None,
    items: ItemCounts,
    *,
    stuck: str | None,
    shard_error: str | None = None,
) -> Observation:
    """The run's phase from its Job and progress (level-based: only current state matters).

    ``shard_error`` is the last error a shard reported (its sink down, its config refused):
    a failed Job's message carries it, so the user reads the cause, not "see the logs"."""
    if job is None:
        return Observation(Phase.PENDING, Reason.PENDING, "creating the run's Job")
    failed = job_condition(job, "Failed")
    if failed is not None and shard_error:
        failed = {**failed, "message": f"{failed.get('message', '')}; shard: {shard_error}"}
    if failed is not None:
        reason = failed.get("reason", "")
        if reason == "DeadlineExceeded":
            return Observation(
                Phase.FAILED,
                Reason.DEADLINE_EXCEEDED,
                f"not finished within deadlineSeconds={spec.deadline_seconds}",
                terminal=True,
            )
        if reason == "PodFailurePolicy":
            return Observation(
                Phase.FAILED,
                Reason.INVALID_SPEC,
                "a worker rejected the configuration (exit 64): " + failed.get("message", ""),
                terminal=True,
            )
        return Observation(
            Phase.FAILED, Reason.FAILED, f"{reason}: {failed.get('message', '')}", terminal=True
        )
    max_failures = spec.dead_letter
    # The same rule as ``fleetsync run`` once every shard finished; before, only too many
    # failures end a run early.
    verdict = (
        final_phase(items, max_failures)
        if job_condition(job, "Complete") is not None
        else too_many_failures(items, max_failures)
    )
    if verdict is not None:
        return Observation(verdict.phase, verdict.reason, verdict.message, terminal=True)
    if spec.suspend:
        return Observation(Phase.SUSPENDED, Reason.SUSPENDED, "suspended; progress is kept")
    if stuck is not None:
        # Not terminal: once the user creates the Secret the pod starts and the run goes on.
        return Observation(Phase.FAILED, Reason.POD_START_FAILED, stuck)
    job_status = job.get("status") or {}
    active = job_status.get("active") or 0
    if active:
        return Observation(Phase.RUNNING, Reason.RUNNING, f"{active} shard pods running")
    if job_status.get("succeeded") or job_status.get("failed") or items.remaining < items.total:
        # Under way with no pod running at this instant: between one shard's pod and the
        # next, or every shard finished and the Job controller has yet to mark the Job
        # Complete. Pending here would flicker a finished run back to "not started".
        return Observation(
            Phase.RUNNING, Reason.RUNNING, "between shard pods (the Job starts the next or ends)"
        )
    return Observation(Phase.PENDING, Reason.PENDING, "waiting for shard pods")


def build_status(
    previous: SyncJobStatus,
    *,
    generation: int | None,
    observation: Observation,
    progress: RunProgress | None,
    plan: RunPlan | None,
    job: Job | None,
    now: float,
) -> SyncJobStatus:
    """The next status: phase, conditions, counts, vendors, cost, failed-item sample."""
    stamp = rfc3339(now)
    items = progress.items() if progress else (previous.items or ItemCounts())
    vendors = progress.vendors() if progress else previous.vendors
    open_breakers = tuple(v.name for v in vendors if v.breaker != "Closed")
    conditions = conditions_for(
        observation.phase,
        observation.reason,
        observation.message,
        Health(
            open_breakers=open_breakers,
            failed_items=items.failed,
            causes=causes_text(progress.failure_causes()) if progress else "",
        ),
    )
    job_status = (job or {}).get("status") or {}
    start = previous.start_time
    if start is None and observation.phase is Phase.RUNNING:
        start = job_status.get("startTime") or stamp
    completion = previous.completion_time
    if completion is None and observation.terminal:
        completion = job_status.get("completionTime") or stamp
    started = parse_time(start)
    end = parse_time(completion) if completion else now
    duration = round(end - started, 1) if started is not None and end is not None else None
    done = items.total - items.remaining
    rate = done / duration if duration else 0.0
    eta = None
    if not observation.terminal and rate > 0 and items.remaining:
        eta = rfc3339(now + items.remaining / rate)
    shards_total = plan.shards if plan else (previous.shards.total if previous.shards else 0)
    failed_count = items.failed
    sample = progress.failed_sample(FAILED_SAMPLE_MAX) if progress else []
    causes = progress.failure_causes() if progress else []
    if not sample and previous.failed_items is not None:
        sample = previous.failed_items.sample
    if not causes and previous.failed_items is not None:
        causes = previous.failed_items.causes
    return SyncJobStatus(
        phase=observation.phase,
        observed_generation=generation,
        conditions=merge_conditions(
            [Condition.model_validate(c) for c in previous.conditions],
            conditions,
            generation=generation,
            now=stamp,
        ),
        start_time=start,
        completion_time=completion,
        duration_seconds=duration,
        duration=None if duration is None else human_duration(duration),
        progress=f"{done}/{items.total}",
        shards=ShardCounts(
            total=shards_total,
            active=int(job_status.get("active") or 0),
            succeeded=progress.done_shards if progress else int(job_status.get("succeeded") or 0),
            failed=int(job_status.get("failed") or 0),
        ),
        items=items,
        throughput=Throughput(items_per_second=round(rate, 1)),
        estimated_completion_time=eta,
        vendors=vendors,
        cost=progress.cost() if progress else previous.cost,
        failed_items=FailedItems(count=failed_count, sample=sample, causes=causes),
        plan=Plan(shards=plan.shards, parallelism=plan.parallelism, reason=plan.reason)
        if plan
        else previous.plan,
        job_ref=JobRef(name=job["metadata"]["name"]) if job else previous.job_ref,
    )


def phase_event(observation: Observation, status: Mapping[str, Any]) -> tuple[str, bool]:
    """The message of a phase change's event, and whether it is a Warning: a run ending with
    failed items says what failed, by cause (:func:`causes_text`)."""
    message = f"{observation.phase}: {observation.message}"
    failed = status.get("failedItems") or {}
    causes = [FailureCause.model_validate(c) for c in failed.get("causes") or []]
    warning = observation.phase is Phase.FAILED
    if causes and observation.terminal:
        message += f"; failed items by cause: {causes_text(causes)}"
        warning = warning or observation.phase is Phase.PARTIALLY_SUCCEEDED
    return message[:1024], warning
