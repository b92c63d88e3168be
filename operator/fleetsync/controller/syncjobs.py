"""The SyncJob reconcile: observe (cache, progress, pods) → decide (pure functions in
plan.py, observe.py, scaling.py) → act (create the Job, align it, write status and events).

Level-based: every call starts from the cached objects and the workers' reports, so a
missed event or a restarted controller changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from fleetsync.api.constants import Phase
from fleetsync.api.v1alpha1.status import SyncJobStatus
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.controller.build import LABEL_SCHEDULE, build_config_map, build_job
from fleetsync.controller.cache import Key, WatchCache
from fleetsync.controller.kube import Kube
from fleetsync.controller.metrics import ControllerMetrics
from fleetsync.controller.namespaces import NamespaceWatch
from fleetsync.controller.objects import Job, KubeObject, Pod, SyncJobObject
from fleetsync.controller.observe import (
    TERMINAL,
    Observation,
    build_status,
    observe,
    parse_time,
    phase_event,
    pod_problem,
    stuck_creating,
)
from fleetsync.controller.plan import RunPlan, plan_run
from fleetsync.controller.progress_store import ProgressStore, RunState
from fleetsync.controller.scaling import next_parallelism
from fleetsync.controller.settings import ControllerSettings
from fleetsync.coordination.progress import RunProgress, expected_total

__all__ = ["SyncJobReconciler", "new_run_state", "owned", "stamp_generation"]

log = logging.getLogger("fleetsync.controller")
Status = Mapping[str, Any]  # a SyncJob's .status, as stored or as just built


def owned(child: KubeObject, owner: KubeObject) -> bool:
    """``child`` names ``owner`` as its controller."""
    uid = owner["metadata"]["uid"]
    refs = child["metadata"].get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def new_run_state(key: Key, uid: str, spec: SyncJobSpec, status: Mapping[str, Any]) -> RunState:
    """A run's state from its validated spec and its status (a restarted controller keeps
    the plan it wrote there)."""
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
    state.last_status = dict(status) or None
    return state


class SyncJobReconciler:
    def __init__(
        self,
        kube: Kube,
        cache: WatchCache,
        runs: dict[Key, RunState],
        store: ProgressStore,
        namespaces: NamespaceWatch,
        metrics: ControllerMetrics,
        *,
        settings: ControllerSettings,
        forget: Callable[[Key], None],
    ) -> None:
        self.kube = kube
        self.cache = cache
        self.runs = runs
        self.store = store
        self.namespaces = namespaces
        self.metrics = metrics
        self.settings = settings
        self.forget = forget  # drops a finished run's state and budgets

    async def reconcile(self, key: Key) -> None:
        body = self.cache.syncjobs.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        status = body.get("status") or {}
        now = time.time()
        if status.get("phase") in TERMINAL and status.get("completionTime"):
            await self._finished(key, body, status, now)
            return
        state = await self.run_state(key, body)
        if state is None:
            return
        await self.store.load(key, state)
        job = self.cache.jobs.get(key)
        pods = self.cache.pods_of(key)
        if await self.namespaces.release(key, job, pods, now):
            return
        if job is not None and not owned(job, body):
            message = f"a Job named {key[1]} exists and is not owned by this SyncJob"
            await self.write_invalid(key, body, message)
            return
        await self._ensure_job(key, body, state, job, now)
        observation = observe(
            state.spec,
            job,
            state.progress.items(),
            stuck=await self._stuck(key, pods, now),
            shard_error=state.progress.last_error(),
        )
        # A terminal run: reports may still be in flight; the Job's completion means every
        # shard is done, so write now.
        await self.store.persist(key, state, force=observation.terminal)
        await self._write_status(key, body, state, observation, job, now)

    async def _finished(self, key: Key, body: SyncJobObject, status: Status, now: float) -> None:
        """A finished run is not run again: its spec is frozen once it started. Its status
        still observes every generation (kstatus and ``kubectl wait`` read that), and a
        spec refused as invalid before any Job existed is checked again once edited."""
        generation = body["metadata"].get("generation")
        if self._recheck(key, status, generation):
            try:
                SyncJobSpec.model_validate(body.get("spec") or {})
            except ValidationError as error:
                await self.write_invalid(key, body, str(error), again=True)
            else:
                log.info("run %s/%s: spec fixed after InvalidSpec; running it", *key)
                fresh = SyncJobStatus(observed_generation=generation)
                await self.kube.patch_syncjob_status(
                    *key, fresh.model_dump(mode="json", by_alias=True)
                )
                self.forget(key)
                return
        elif (restamped := stamp_generation(status, generation)) is not None:
            await self.kube.patch_syncjob_status(*key, restamped)
        await self._expire(key, body, status, now)
        self.forget(key)

    def _recheck(self, key: Key, status: Status, generation: int | None) -> bool:
        """Failed as InvalidSpec without a Job, and edited since."""
        if status.get("phase") != Phase.FAILED or status.get("observedGeneration") == generation:
            return False
        return self.cache.jobs.get(key) is None and _refused_as_invalid(status)

    async def run_state(self, key: Key, body: SyncJobObject) -> RunState | None:
        """The run's state, created from its spec on first sight; None for an invalid spec."""
        state = self.runs.get(key)
        uid = body["metadata"]["uid"]
        if state is not None and state.uid == uid:
            suspend = bool((body.get("spec") or {}).get("suspend", False))
            if suspend != state.spec.suspend:
                state.spec = state.spec.model_copy(update={"suspend": suspend})
            return state
        try:
            spec = SyncJobSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            # The CRD's schema and CEL rules catch nearly everything; what they cannot is
            # reported in status, with the field, as a Failed run.
            await self.write_invalid(key, body, str(error))
            return None
        state = self.runs[key] = new_run_state(key, uid, spec, body.get("status") or {})
        return state

    async def write_invalid(
        self, key: Key, body: SyncJobObject, message: str, *, again: bool = False
    ) -> None:
        """Fail the run as InvalidSpec (once; ``again`` for an edited spec still invalid)."""
        status = body.get("status") or {}
        if status.get("phase") == Phase.FAILED and not again:
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

    async def _ensure_job(
        self, key: Key, body: SyncJobObject, state: RunState, job: Job | None, now: float
    ) -> None:
        if job is not None:
            await self._align_job(key, state, job, now)
            return
        created = await self.kube.create(build_config_map(body, state.spec))
        created = (
            await self.kube.create(build_job(body, state.spec, state.plan, self.settings.worker))
            or created
        )
        if created:
            await self.kube.event(body, "SyncJob", "Planned", state.plan.reason, warning=False)

    async def _align_job(self, key: Key, state: RunState, job: Job, now: float) -> None:
        spec = job.get("spec") or {}
        patch: dict[str, Any] = {}
        if bool(spec.get("suspend")) != state.spec.suspend:
            patch["suspend"] = state.spec.suspend
        parallelism = self._scale(state, now)
        if parallelism != spec.get("parallelism"):
            patch["parallelism"] = parallelism
        if patch:
            await self.kube.patch_job(key[0], key[1], patch)

    def _scale(self, state: RunState, now: float) -> int:
        plan = state.plan
        step = next_parallelism(
            state.spec,
            plan,
            throttled=sum(v.throttled for v in state.progress.vendors()),
            throttled_at_last=state.throttled_at_scale,
            last_scaled=state.scaled,
            last_status=state.last_status,
            now=now,
            interval=self.settings.scale_interval,
        )
        if step is None:
            return plan.parallelism
        state.throttled_at_scale = step.throttled
        state.scaled = now
        if step.parallelism != plan.parallelism:
            log.info(
                "run %s: parallelism %d -> %d",
                state.progress.run,
                plan.parallelism,
                step.parallelism,
            )
            state.plan = RunPlan(
                plan.shards, step.parallelism, plan.reason + f"; scaled to {step.parallelism}"
            )
        return state.plan.parallelism

    async def _stuck(self, key: Key, pods: Sequence[Pod], now: float) -> str | None:
        """Why the run's pods cannot start, with the latest Warning event of each."""
        grace = self.settings.pod_start_grace
        warnings: dict[str, str] = {}
        for pod in stuck_creating(pods, now, grace):
            events = await self.kube.warning_events(key[0], pod["metadata"]["uid"])
            if events:
                latest = max(events, key=lambda e: e.get("lastTimestamp") or "")
                warnings[pod["metadata"]["uid"]] = f"{latest['reason']}: {latest['message']}"
        return pod_problem(pods, now, grace, warnings)

    async def _write_status(
        self,
        key: Key,
        body: SyncJobObject,
        state: RunState,
        observation: Observation,
        job: Job | None,
        now: float,
    ) -> None:
        new = build_status(
            SyncJobStatus.model_validate(body.get("status") or {}),
            generation=body["metadata"].get("generation"),
            observation=observation,
            progress=state.progress,
            plan=state.plan,
            job=job,
            now=now,
        ).model_dump(mode="json", by_alias=True)
        comparable = {k: v for k, v in new.items() if k != "durationSeconds"}
        last = {k: v for k, v in (state.last_status or {}).items() if k != "durationSeconds"}
        if comparable == last and state.phase == observation.phase:
            return
        if now - state.status_written < self.settings.status_interval:
            return
        await self.kube.patch_syncjob_status(*key, new)
        state.status_written = now
        state.last_status = new
        await self._announce(key, body, state, observation, new)
        self.metrics.observe_run(_owner_of(body), key[0], new)

    async def _announce(
        self, key: Key, body: SyncJobObject, state: RunState, observation: Observation, new: Status
    ) -> None:
        """Events for a phase change and for each vendor's breaker opening or closing."""
        if state.phase != observation.phase:
            log.info("run %s/%s: %s (%s)", key[0], key[1], observation.phase, observation.reason)
            message, warning = phase_event(observation, new)
            await self.kube.event(body, "SyncJob", observation.reason, message, warning=warning)
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

    async def _expire(self, key: Key, body: SyncJobObject, status: Status, now: float) -> None:
        ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
        finished = parse_time(status.get("completionTime"))
        if ttl is not None and finished is not None and now >= finished + ttl:
            await self.kube.delete_syncjob(*key)


def stamp_generation(status: Status, generation: int | None) -> dict[str, Any] | None:
    """``status`` with ``observedGeneration`` (top level and on each condition) at
    ``generation``; None when it already is."""
    conditions = list(status.get("conditions") or [])
    if status.get("observedGeneration") == generation and all(
        c.get("observedGeneration") == generation for c in conditions
    ):
        return None
    return {
        **status,
        "observedGeneration": generation,
        "conditions": [{**c, "observedGeneration": generation} for c in conditions],
    }


def _refused_as_invalid(status: Status) -> bool:
    return any(
        c.get("type") == "Failed" and c.get("reason") == "InvalidSpec"
        for c in status.get("conditions") or []
    )


def _owner_of(body: SyncJobObject) -> str:
    labels = (body.get("metadata") or {}).get("labels") or {}
    return str(labels.get(LABEL_SCHEDULE) or body["metadata"]["name"])
