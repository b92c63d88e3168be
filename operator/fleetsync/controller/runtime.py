"""The controller's composition root and its reconcile loop.

kopf watches SyncJobs, SyncSchedules and the Jobs and pods fleetsync owns and feeds every
event into the watch cache (handlers.py → cache.py). One loop reconciles each object at
most every ``tick`` seconds, level-based, each kind in its own room: SyncJobs in
syncjobs.py, SyncSchedules in schedules.py. Worker reports arrive over HTTP (server.py,
through the narrow ``ReportDesk`` this class implements) and are folded in by intake.py;
progress_store.py persists them to the run's progress ConfigMap so a restarted controller
loses nothing. An object whose reconcile keeps failing backs off on its own (failures.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import ValidationError

from fleetsync.api.progress import ReplyWire, ReportWire
from fleetsync.api.v1alpha1.syncschedule import SyncScheduleSpec
from fleetsync.controller.build import TOKEN_AUDIENCE, worker_service_account
from fleetsync.controller.cache import Key, WatchCache, key_of
from fleetsync.controller.failures import FailureBackoff
from fleetsync.controller.intake import ReportIntake
from fleetsync.controller.kube import Kube, is_namespace_terminating
from fleetsync.controller.metrics import ControllerMetrics
from fleetsync.controller.namespaces import NamespaceWatch
from fleetsync.controller.objects import Pod, TokenReviewStatus
from fleetsync.controller.progress_store import ProgressStore, RunState
from fleetsync.controller.reportauth import RunView, allowed_keys
from fleetsync.controller.schedules import (
    apply_schedule,
    plan_invalid,
    plan_schedule,
    spec_errors,
)
from fleetsync.controller.settings import ControllerSettings
from fleetsync.controller.syncjobs import SyncJobReconciler

__all__ = ["Controller", "ControllerSettings", "RunState"]

log = logging.getLogger("fleetsync.controller")
# SyncJobs reconciled at once per tick (API calls in flight stay well under the client pool).
RECONCILE_CONCURRENCY = 16


def _generation(body: Mapping[str, Any]) -> Any:
    return (body.get("metadata") or {}).get("generation")


class Controller:
    """Wires the rooms together and runs the loop; holds no policy of its own."""

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
        self.cache = WatchCache()
        self.runs: dict[Key, RunState] = {}
        self.wake = asyncio.Event()
        self.namespaces = NamespaceWatch(kube)
        self.store = ProgressStore(
            kube, self.cache.syncjobs.get, interval=settings.progress_interval
        )
        self.intake = ReportIntake(self.runs, settings.lease, self.wake.set)
        self.syncjobs = SyncJobReconciler(
            kube,
            self.cache,
            self.runs,
            self.store,
            self.namespaces,
            self.metrics,
            settings=settings,
            forget=self._forget_run,
        )
        self.failures = FailureBackoff(settings.tick_seconds)
        self._task: asyncio.Task[None] | None = None
        self.last_loop = time.monotonic()

    # --- cache intake (from kopf's watch streams) ------------------------------------------

    def remember(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        before = self.cache.get(kind, key_of(body))
        key = self.cache.remember(kind, event_type, body)
        if before is not None and _generation(before) != _generation(body):
            self.failures.succeeded(kind, key)  # a new spec: try it at once
        if kind == "SyncJob" and event_type == "DELETED":
            self._forget_run(key)
        self.wake.set()

    def _forget_run(self, key: Key) -> None:
        state = self.runs.pop(key, None)
        if state is not None:
            self.intake.release(key)

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
                await self.store.persist(key, state, force=True)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.settings.tick_seconds)
            self.wake.clear()
            self.last_loop = time.monotonic()
            await self.reconcile_all()

    async def reconcile_all(self) -> None:
        for key in list(self.cache.schedules):
            await self._reconcile_one("SyncSchedule", key, self.reconcile_schedule)
        # SyncJobs are independent of each other (each reconcile touches its own run state
        # and objects): up to RECONCILE_CONCURRENCY at once, so 200 applied together get
        # their Jobs in a few round trips' time rather than 200 times four API calls in a row.
        room = asyncio.Semaphore(RECONCILE_CONCURRENCY)

        async def one(key: Key) -> None:
            async with room:
                await self._reconcile_one("SyncJob", key, self.reconcile_syncjob)

        await asyncio.gather(*(one(key) for key in list(self.cache.syncjobs)))
        self.metrics.observe_phases(self.cache.syncjobs.values())

    async def _reconcile_one(
        self, kind: str, key: Key, reconcile: Callable[[Key], Awaitable[None]]
    ) -> None:
        now = time.monotonic()
        if not self.failures.due(kind, key, now):
            return
        try:
            await reconcile(key)
        except Exception as error:
            if is_namespace_terminating(error):
                self.namespaces.mark(key[0])
            else:
                self.failures.failed(kind, key, now, error)
        else:
            self.failures.succeeded(kind, key)
        self.metrics.reconcile.labels(kind=kind).observe(time.monotonic() - now)

    async def reconcile_syncjob(self, key: Key) -> None:
        await self.syncjobs.reconcile(key)

    async def reconcile_schedule(self, key: Key) -> None:
        body = self.cache.schedules.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        try:
            spec = SyncScheduleSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            decision = plan_invalid(body, spec_errors(error), self.clock())
        else:
            decision = plan_schedule(body, spec, self.cache.runs_of(*key), self.clock())
        await apply_schedule(self.kube, self.metrics, body, key, decision)

    # --- the report server's ReportDesk ------------------------------------------------------

    def accept_report(self, namespace: str, report: ReportWire) -> ReplyWire | None:
        """Fold one report in; None when the run is unknown here (yet)."""
        return self.intake.accept(namespace, report)

    async def persist_run(self, namespace: str, run: str) -> bool:
        """Write a run's progress now (a shard's last report); False if that failed."""
        key = (namespace, run)
        state = self.runs.get(key)
        if state is None:
            return False
        try:
            await self.store.persist(key, state, force=True)
        except Exception as error:
            if is_namespace_terminating(error):
                self.namespaces.mark(namespace)
            else:
                log.warning("persisting progress of %s/%s failed", namespace, run, exc_info=True)
            return False
        return True

    async def find_pod(self, namespace: str, name: str) -> Pod | None:
        """From the cache, else from the API (the watch may lag behind a new pod)."""
        pod = self.cache.pods.get((namespace, name))
        return pod if pod is not None else await self.kube.read_pod(namespace, name)

    async def review_token(self, token: str) -> TokenReviewStatus:
        """The API server's TokenReview status for a worker's token."""
        review = await self.kube.token_review(token, TOKEN_AUDIENCE)
        return review.get("status") or {}

    def run_view(self, namespace: str, run: str) -> RunView | None:
        """The run as the report server judges its reporters; None if not known here."""
        key = (namespace, run)
        state, body = self.runs.get(key), self.cache.syncjobs.get(key)
        if state is None or body is None or body["metadata"].get("uid") != state.uid:
            return None
        if state.may_want is None:
            state.may_want = allowed_keys(state.spec)
        return RunView(
            syncjob_uid=state.uid,
            job=self.cache.jobs.get(key),
            shards=state.plan.shards,
            service_account=worker_service_account(state.spec, self.settings.worker),
            may_want=state.may_want,
        )

    def healthy(self) -> bool:
        """The reconcile loop has run recently."""
        stale = time.monotonic() - self.last_loop
        return stale <= max(30.0, self.settings.tick_seconds * 30)
