"""The controller's state and its reconcile loop.

kopf watches SyncJobs, SyncSchedules and the Jobs and pods fleetsync owns, and feeds every
event into the caches here (handlers.py). One loop reconciles each object at most every
``tick`` seconds, level-based: from the cached objects and the workers' reports it builds
what should exist (pure functions in build.py, observe.py, schedule.py) and makes the API
match. Worker reports arrive over HTTP (server.py) and are folded into ``RunState``, which
is persisted to the run's progress ConfigMap so a restarted controller loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from fleetsync.api.constants import (
    ANNOTATION_RUN_NOW,
    ANNOTATION_SCHEDULED_TIME,
    API_VERSION,
    Phase,
)
from fleetsync.api.progress import FINAL_STATES, ReplyWire, ReportWire
from fleetsync.api.v1alpha1.status import SyncJobStatus
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.api.v1alpha1.syncschedule import SyncScheduleSpec
from fleetsync.controller.build import (
    LABEL_RUN,
    LABEL_SCHEDULE,
    MANAGED_BY,
    WorkerSettings,
    build_config_map,
    build_job,
    progress_config_map_name,
    run_labels,
)
from fleetsync.controller.kube import Kube, is_namespace_terminating
from fleetsync.controller.metrics import ControllerMetrics
from fleetsync.controller.observe import (
    TERMINAL,
    Observation,
    build_status,
    observe,
    parse_time,
    pod_problem,
    rfc3339,
    stuck_creating,
)
from fleetsync.controller.plan import RunPlan, plan_run
from fleetsync.controller.schedule import due_tick, next_tick, run_name, run_now_name
from fleetsync.coordination.budgets import BudgetBook
from fleetsync.coordination.progress import RunProgress, expected_total
from fleetsync.coordination.timing import LeaseTiming

__all__ = ["Controller", "ControllerSettings", "RunState"]

log = logging.getLogger("fleetsync.controller")
Key = tuple[str, str]  # (namespace, name)
Body = Mapping[str, Any]
TERMINATING_MEMORY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    worker: WorkerSettings
    tick_seconds: float = 1.0
    status_interval: float = 2.0  # at most one status write per SyncJob per this
    progress_interval: float = 2.0
    lease: LeaseTiming = field(default_factory=LeaseTiming)
    pod_start_grace: float = 20.0
    scale_interval: float = 30.0


@dataclass(slots=True)
class RunState:
    uid: str
    spec: SyncJobSpec
    plan: RunPlan
    progress: RunProgress
    loaded: bool = False
    progress_dirty: bool = False
    progress_written: float = 0.0
    progress_cm_exists: bool = False
    status_written: float = 0.0
    last_status: dict[str, Any] | None = None
    phase: Phase | None = None
    breakers: dict[str, str] = field(default_factory=dict)
    scaled: float = 0.0
    throttled_at_scale: int = 0
    # One progress write at a time: a snapshot taken earlier must never land after a later.
    persisting: asyncio.Lock = field(default_factory=asyncio.Lock)


class Controller:
    def __init__(
        self,
        kube: Kube,
        settings: ControllerSettings,
        *,
        clock: Callable[[], float] = time.time,  # schedules only; runs use real time
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self.metrics = metrics or ControllerMetrics()
        self.syncjobs: dict[Key, dict[str, Any]] = {}
        self.schedules: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, Any]] = {}
        self.pods: dict[Key, dict[str, Any]] = {}
        self.runs: dict[Key, RunState] = {}
        self.terminating: dict[str, float] = {}  # namespace -> when seen being deleted
        self._probed: dict[str, float] = {}  # namespace -> when last probed for that
        self.budgets: dict[str, BudgetBook] = {}
        self.started = time.time()
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_loop = time.monotonic()

    # --- cache intake (from kopf's watch streams) ------------------------------------------

    def remember(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        cache = {
            "SyncJob": self.syncjobs,
            "SyncSchedule": self.schedules,
            "Job": self.jobs,
            "Pod": self.pods,
        }[kind]
        if event_type == "DELETED":
            cache.pop(key, None)
            if kind == "SyncJob":
                self._forget_run(key)
        else:
            cache[key] = dict(body)
        self.wake.set()

    def _forget_run(self, key: Key) -> None:
        state = self.runs.pop(key, None)
        if state is None:
            return
        book = self.budgets.get(key[0])
        if book is not None:
            now = time.time()
            for shard in range(state.plan.shards):
                book.release(f"{key[1]}/{shard}", now)

    # --- the loop ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="fleetsync-reconcile")

    async def stop(self) -> None:
        """Called after the report server has stopped: nothing changes progress any more."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for key, state in list(self.runs.items()):
            with contextlib.suppress(Exception):
                await self._persist_progress(key, state, force=True)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.settings.tick_seconds)
            self.wake.clear()
            self.last_loop = time.monotonic()
            await self.reconcile_all()

    async def reconcile_all(self) -> None:
        for key in list(self.schedules):
            started = time.monotonic()
            try:
                await self.reconcile_schedule(key)
            except Exception as error:
                if is_namespace_terminating(error):
                    self._mark_terminating(key[0])
                else:
                    log.exception("reconciling SyncSchedule %s/%s", *key)
            self.metrics.reconcile.labels(kind="SyncSchedule").observe(time.monotonic() - started)
        for key in list(self.syncjobs):
            started = time.monotonic()
            try:
                await self.reconcile_syncjob(key)
            except Exception as error:
                if is_namespace_terminating(error):
                    self._mark_terminating(key[0])
                else:
                    log.exception("reconciling SyncJob %s/%s", *key)
            self.metrics.reconcile.labels(kind="SyncJob").observe(time.monotonic() - started)
        self.metrics.observe_phases(self.syncjobs.values())

    # --- SyncJob ---------------------------------------------------------------------------

    def _owner_of(self, body: Mapping[str, Any]) -> str:
        labels = (body.get("metadata") or {}).get("labels") or {}
        return str(labels.get(LABEL_SCHEDULE) or body["metadata"]["name"])

    async def _run_state(self, key: Key, body: Mapping[str, Any]) -> RunState | None:
        state = self.runs.get(key)
        uid = body["metadata"]["uid"]
        if state is not None and state.uid == uid:
            generation_spec = body.get("spec") or {}
            if generation_spec.get("suspend", False) != state.spec.suspend:
                state.spec = state.spec.model_copy(
                    update={"suspend": bool(generation_spec.get("suspend"))}
                )
            return state
        try:
            spec = SyncJobSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            # The CRD's schema and CEL rules catch nearly everything; what they cannot is
            # reported in status, with the field, as a Failed run.
            await self._write_invalid(key, body, str(error))
            return None
        status = body.get("status") or {}
        previous_plan = status.get("plan")
        if previous_plan:
            plan = RunPlan(
                previous_plan["shards"], previous_plan["parallelism"], previous_plan["reason"]
            )
        else:
            plan = plan_run(spec, expected_total(spec))
        progress = RunProgress(key[1], plan.shards, expected_total=expected_total(spec))
        state = RunState(uid=uid, spec=spec, plan=plan, progress=progress)
        state.phase = Phase(status["phase"]) if status.get("phase") else None
        state.last_status = status or None
        self.runs[key] = state
        return state

    async def _write_invalid(self, key: Key, body: Mapping[str, Any], message: str) -> None:
        status = body.get("status") or {}
        if status.get("phase") == Phase.FAILED:
            return
        previous = SyncJobStatus.model_validate(status) if status else SyncJobStatus()
        new = build_status(
            previous,
            generation=body["metadata"].get("generation"),
            observation=Observation(Phase.FAILED, "InvalidSpec", message[:2000], terminal=True),
            progress=None,
            plan=None,
            job=None,
            now=time.time(),
        )
        await self.kube.patch_syncjob_status(*key, new.model_dump(mode="json", by_alias=True))

    async def _load_progress(self, key: Key, state: RunState) -> None:
        if state.loaded:
            return
        cm = await self.kube.read_config_map(key[0], progress_config_map_name(key[1]))
        if cm is not None:
            state.progress_cm_exists = True
            raw = (cm.get("data") or {}).get("progress.json")
            if raw:
                state.progress.restore(json.loads(raw))
        state.loaded = True

    async def _persist_progress(self, key: Key, state: RunState, *, force: bool = False) -> None:
        async with state.persisting:
            now = time.time()
            if not state.progress_dirty:
                return
            if not force and now - state.progress_written < self.settings.progress_interval:
                return
            snapshot = json.dumps(state.progress.snapshot(), separators=(",", ":"))
            # Cleared before the write: a report accepted while it is in flight marks the
            # run dirty again instead of being taken for written.
            state.progress_dirty = False
            try:
                await self._write_progress(key, state, {"progress.json": snapshot})
            except BaseException:
                state.progress_dirty = True
                raise
            state.progress_written = now

    async def _write_progress(self, key: Key, state: RunState, data: dict[str, str]) -> None:
        if state.progress_cm_exists:
            await self.kube.replace_config_map_data(key[0], progress_config_map_name(key[1]), data)
            return
        body = self.syncjobs.get(key)
        if body is None:
            raise RuntimeError(f"SyncJob {key[0]}/{key[1]} not known: progress not written")
        cm = build_config_map(body, state.spec)
        cm["metadata"]["name"] = progress_config_map_name(key[1])
        cm["data"] = data
        if not await self.kube.create(cm):
            await self.kube.replace_config_map_data(key[0], progress_config_map_name(key[1]), data)
        state.progress_cm_exists = True

    async def reconcile_syncjob(self, key: Key) -> None:
        body = self.syncjobs.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        status = body.get("status") or {}
        now = time.time()
        if status.get("phase") in TERMINAL and status.get("completionTime"):
            await self._expire(key, body, status, now)
            self._forget_run(key)
            return
        state = await self._run_state(key, body)
        if state is None:
            return
        await self._load_progress(key, state)
        job = self.jobs.get(key)
        pods = [
            p
            for (ns, _), p in self.pods.items()
            if ns == key[0] and (p["metadata"].get("labels") or {}).get(LABEL_RUN) == key[1]
        ]
        if await self._release_terminating(key, job, pods, now):
            return
        if job is not None and not self._owned(job, body):
            await self._write_invalid(
                key, body, f"a Job named {key[1]} exists and is not owned by this SyncJob"
            )
            return
        if job is None:
            created = await self.kube.create(build_config_map(body, state.spec))
            created = (
                await self.kube.create(
                    build_job(body, state.spec, state.plan, self.settings.worker)
                )
                or created
            )
            if created:
                await self.kube.event(body, "SyncJob", "Planned", state.plan.reason, warning=False)
        else:
            await self._align_job(key, state, job, now)
        warnings: dict[str, str] = {}
        for pod in stuck_creating(pods, now, self.settings.pod_start_grace):
            events = await self.kube.warning_events(key[0], pod["metadata"]["uid"])
            if events:
                latest = max(events, key=lambda e: e.get("lastTimestamp") or "")
                warnings[pod["metadata"]["uid"]] = f"{latest['reason']}: {latest['message']}"
        stuck = pod_problem(pods, now, self.settings.pod_start_grace, warnings)
        items = state.progress.items()
        observation = observe(state.spec, job, items, stuck=stuck)
        if observation.terminal:
            # Reports may still be in flight; the Job's completion means every shard is done.
            await self._persist_progress(key, state, force=True)
        else:
            await self._persist_progress(key, state)
        await self._write_status(key, body, state, observation, job, now)

    def _mark_terminating(self, namespace: str) -> None:
        if namespace not in self.terminating:
            log.info("namespace %s is being deleted: its runs are released, not resumed", namespace)
        self.terminating[namespace] = time.monotonic()

    def _known_terminating(self, namespace: str) -> bool:
        # A namespace never stops terminating, but one of the same name may be created later.
        marked = self.terminating.get(namespace)
        return marked is not None and time.monotonic() - marked < TERMINATING_MEMORY_SECONDS

    async def _release_terminating(
        self, key: Key, job: Body | None, pods: Sequence[Body], now: float
    ) -> bool:
        """True when the run's namespace is being deleted; its Job is then deleted.

        Kubernetes deletes a namespace's pods before anything else in it (ordered namespace
        deletion, GA in 1.34). A shard pod that fails there keeps the Job controller's
        tracking finalizer until the Job has created the index's replacement pod
        (backoffLimitPerIndex), which a terminating namespace refuses: the namespace would
        never go. A Job being deleted releases its pods' finalizers at once."""
        namespace = key[0]
        if not self._known_terminating(namespace):
            deleting = any(p["metadata"].get("deletionTimestamp") for p in pods)
            if not deleting or now - self._probed.get(namespace, -1e9) < 5.0:
                return False
            self._probed[namespace] = now
            if not await self.kube.namespace_terminating(namespace):
                return False
            self._mark_terminating(namespace)
        if job is not None and not job["metadata"].get("deletionTimestamp"):
            log.info("deleting Job %s/%s: its namespace is being deleted", *key)
            await self.kube.delete_job(*key)
        return True

    def _owned(self, child: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
        uid = owner["metadata"]["uid"]
        refs = child["metadata"].get("ownerReferences") or []
        return any(r.get("uid") == uid and r.get("controller") for r in refs)

    async def _align_job(
        self, key: Key, state: RunState, job: Mapping[str, Any], now: float
    ) -> None:
        spec = job.get("spec") or {}
        patch: dict[str, Any] = {}
        if bool(spec.get("suspend")) != state.spec.suspend:
            patch["suspend"] = state.spec.suspend
        parallelism = self._scaled_parallelism(state, now)
        if parallelism != spec.get("parallelism"):
            patch["parallelism"] = parallelism
        if patch:
            await self.kube.patch_job(key[0], key[1], patch)

    def _scaled_parallelism(self, state: RunState, now: float) -> int:
        """Raise parallelism when the ETA misses the deadline and no vendor is throttling;
        lower it under sustained 429s. At most one step per ``scale_interval``."""
        plan = state.plan
        cap = min(plan.shards, state.spec.sharding.max_parallelism)
        if not isinstance(state.spec.sharding.parallelism, str):
            return plan.parallelism
        if now - state.scaled < self.settings.scale_interval:
            return plan.parallelism
        vendors = state.progress.vendors()
        throttled = sum(v.throttled for v in vendors)
        new = plan.parallelism
        if throttled - state.throttled_at_scale > 10 * plan.parallelism:
            new = max(1, plan.parallelism - 1)
        elif state.spec.deadline_seconds and state.last_status:
            eta = parse_time(state.last_status.get("estimatedCompletionTime"))
            started = parse_time(state.last_status.get("startTime"))
            if eta and started and eta > started + state.spec.deadline_seconds:
                new = min(cap, plan.parallelism + 1)
        state.throttled_at_scale = throttled
        state.scaled = now
        if new != plan.parallelism:
            log.info("run %s: parallelism %d -> %d", state.progress.run, plan.parallelism, new)
            state.plan = RunPlan(plan.shards, new, plan.reason + f"; scaled to {new}")
        return state.plan.parallelism

    async def _write_status(
        self,
        key: Key,
        body: Mapping[str, Any],
        state: RunState,
        observation: Observation,
        job: Mapping[str, Any] | None,
        now: float,
    ) -> None:
        previous = SyncJobStatus.model_validate(body.get("status") or {})
        new = build_status(
            previous,
            generation=body["metadata"].get("generation"),
            observation=observation,
            progress=state.progress,
            plan=state.plan,
            job=job,
            now=now,
        ).model_dump(mode="json", by_alias=True)
        comparable = {k: v for k, v in new.items() if k not in ("durationSeconds",)}
        last = {k: v for k, v in (state.last_status or {}).items() if k != "durationSeconds"}
        if comparable == last and state.phase == observation.phase:
            return
        if now - state.status_written < self.settings.status_interval:
            return
        await self.kube.patch_syncjob_status(*key, new)
        state.status_written = now
        state.last_status = new
        if state.phase != observation.phase:
            log.info("run %s/%s: %s (%s)", key[0], key[1], observation.phase, observation.reason)
            await self.kube.event(
                body,
                "SyncJob",
                observation.reason,
                f"{observation.phase}: {observation.message}",
                warning=observation.phase is Phase.FAILED,
            )
            state.phase = observation.phase
        for vendor in new.get("vendors") or []:
            before = state.breakers.get(vendor["name"], "Closed")
            if vendor["breaker"] != before:
                await self.kube.event(
                    body,
                    "SyncJob",
                    "BreakerOpen" if vendor["breaker"] == "Open" else "BreakerClosed",
                    f"vendor {vendor['name']}: circuit breaker {before} -> {vendor['breaker']}",
                    warning=vendor["breaker"] == "Open",
                )
                state.breakers[vendor["name"]] = vendor["breaker"]
        self.metrics.observe_run(self._owner_of(body), key[0], new)

    async def _expire(
        self, key: Key, body: Mapping[str, Any], status: Mapping[str, Any], now: float
    ) -> None:
        ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
        finished = parse_time(status.get("completionTime"))
        if ttl is not None and finished is not None and now >= finished + ttl:
            await self.kube.delete_syncjob(*key)

    # --- worker reports --------------------------------------------------------------------

    async def persist_run(self, namespace: str, run: str) -> bool:
        """Write a run's progress now (a shard's last report); False if that failed."""
        key = (namespace, run)
        state = self.runs.get(key)
        if state is None:
            return False
        try:
            await self._persist_progress(key, state, force=True)
        except Exception as error:
            if is_namespace_terminating(error):
                self._mark_terminating(namespace)
            else:
                log.warning("persisting progress of %s/%s failed", namespace, run, exc_info=True)
            return False
        return True

    def accept_report(self, namespace: str, report: ReportWire) -> ReplyWire | None:
        """Fold one report in; None when the run is unknown here (yet)."""
        key = (namespace, report["run"])
        state = self.runs.get(key)
        if state is None or not state.loaded:
            return None
        now = time.time()
        holder = f"{report['run']}/{report['shard']}"
        book = self.budgets.get(namespace)
        if book is None:
            book = self.budgets[namespace] = BudgetBook(self.settings.lease)
            # A restarted controller cannot know the leases its predecessor handed out.
            book.hold_off(now)
        before = state.progress.views.get(report["shard"])
        before_state = before.state if before else None
        if not state.progress.accept(report, now):
            return ReplyWire(grants={}, breakers={}, stop=True, resume=None)
        state.progress_dirty = True
        if report["state"] in FINAL_STATES:
            book.release(holder, now)
            grants = {}
        else:
            grants = book.renew(holder, report["wants"], now)
        if report["state"] != before_state:
            log.info(
                "run %s/%s shard %d (%s): %s -> %s",
                namespace,
                report["run"],
                report["shard"],
                report["pod"],
                before_state,
                report["state"],
            )
            self.wake.set()
        resume = (
            state.progress.resume_for(report["shard"]) if report["state"] == "starting" else None
        )
        return ReplyWire(
            grants=grants,
            breakers=state.progress.breaker_verdicts(),
            stop=state.spec.suspend,
            resume=resume,
        )

    # --- SyncSchedule ----------------------------------------------------------------------

    def _runs_of(self, namespace: str, schedule: str) -> list[dict[str, Any]]:
        return sorted(
            (
                b
                for (ns, _), b in self.syncjobs.items()
                if ns == namespace
                and ((b["metadata"].get("labels") or {}).get(LABEL_SCHEDULE) == schedule)
                and not b["metadata"].get("deletionTimestamp")
            ),
            key=lambda b: b["metadata"].get("creationTimestamp", ""),
        )

    def _run_body(
        self, schedule: Mapping[str, Any], spec: SyncScheduleSpec, name: str, tick: float
    ) -> dict[str, Any]:
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

    async def reconcile_schedule(self, key: Key) -> None:
        body = self.schedules.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        spec = SyncScheduleSpec.model_validate(body.get("spec") or {})
        status = dict(body.get("status") or {})
        now = self.clock()
        runs = self._runs_of(*key)
        active = [r for r in runs if (r.get("status") or {}).get("phase") not in TERMINAL]
        created: list[str] = []

        # fleetsync.dev/run-now: one run per new annotation value (fixed name → 409 on repeat).
        request = (body["metadata"].get("annotations") or {}).get(ANNOTATION_RUN_NOW)
        if request:
            name = run_now_name(key[1], request)
            if (
                not any(r["metadata"]["name"] == name for r in runs)
                and status.get("lastRunNow") != request
            ):
                if await self.kube.create(self._run_body(body, spec, name, now)):
                    created.append(name)
                status["lastRunNow"] = request

        last = (
            parse_time(status.get("lastScheduleTime"))
            or parse_time(body["metadata"].get("creationTimestamp"))
            or now
        )
        tick = None if spec.suspend else due_tick(spec, last, now)
        if tick is not None:
            status["lastScheduleTime"] = rfc3339(tick.time)
            status["missed"] = int(status.get("missed") or 0) + tick.missed
            if tick.too_late:
                status["missed"] = int(status["missed"]) + 1
            elif not tick.in_window:
                status["skippedOutsideWindow"] = int(status.get("skippedOutsideWindow") or 0) + 1
            elif active and spec.concurrency_policy == "Forbid":
                status["missed"] = int(status["missed"]) + 1
                await self.kube.event(
                    body,
                    "SyncSchedule",
                    "RunSkipped",
                    "previous run still active (concurrencyPolicy Forbid)",
                    warning=False,
                )
            else:
                if active and spec.concurrency_policy == "Replace":
                    for run in active:
                        await self.kube.delete_syncjob(key[0], run["metadata"]["name"])
                name = run_name(key[1], tick.time)
                if await self.kube.create(self._run_body(body, spec, name, tick.time)):
                    created.append(name)
                    await self.kube.event(
                        body,
                        "SyncSchedule",
                        "RunCreated",
                        f"created SyncJob {name}",
                        warning=False,
                    )
        await self._prune_history(key, spec, runs)
        succeeded = [
            parse_time((r.get("status") or {}).get("completionTime"))
            for r in runs
            if (r.get("status") or {}).get("phase") in (Phase.SUCCEEDED, Phase.PARTIALLY_SUCCEEDED)
        ]
        times = [t for t in succeeded if t is not None]
        if times:
            status["lastSuccessfulTime"] = rfc3339(max(times))
        status["nextScheduleTime"] = (
            None if spec.suspend else rfc3339(next_tick(spec, max(now, last)))
        )
        status["active"] = [
            {"name": r["metadata"]["name"], "namespace": key[0], "uid": r["metadata"]["uid"]}
            for r in active
        ] + [{"name": n, "namespace": key[0]} for n in created]
        self.metrics.observe_schedule(key[1], key[0], status)
        if status != (body.get("status") or {}):
            await self.kube.patch_schedule_status(*key, status)

    async def _prune_history(
        self, key: Key, spec: SyncScheduleSpec, runs: list[dict[str, Any]]
    ) -> None:
        finished = [r for r in runs if (r.get("status") or {}).get("phase") in TERMINAL]
        ok = [r for r in finished if r["status"]["phase"] != Phase.FAILED]
        failed = [r for r in finished if r["status"]["phase"] == Phase.FAILED]
        for group, limit in (
            (ok, spec.successful_jobs_history_limit),
            (failed, spec.failed_jobs_history_limit),
        ):
            for run in group[: max(0, len(group) - limit)]:
                await self.kube.delete_syncjob(key[0], run["metadata"]["name"])

    # --- used by the report endpoint -------------------------------------------------------

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.pods.get((namespace, name))


MANAGED_SELECTOR = dict(MANAGED_BY)
