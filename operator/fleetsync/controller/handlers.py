"""kopf wiring: watch streams feed the controller's caches; nothing else runs in handlers.

Only ``on.event`` handlers are used: they add no finalizers (a stopped controller never
blocks a ``kubectl delete``) and write no annotations onto the watched objects, unlike
timers, daemons and ``on.create``/``on.update`` (see KOPF.md). The reconcile loop and the
HTTP server start with the operator and stop with it.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from fleetsync.api.constants import GROUP, VERSION
from fleetsync.controller.build import MANAGED_BY
from fleetsync.controller.kube import credentials
from fleetsync.controller.runtime import Controller
from fleetsync.controller.server import ReportServer

__all__ = ["build_registry"]


def build_registry(controller: Controller, server: ReportServer, listen: tuple[str, int]) -> Any:
    registry = kopf.OperatorRegistry()
    managed = {"app.kubernetes.io/managed-by": MANAGED_BY["app.kubernetes.io/managed-by"]}

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # One auth stack: the watches use the credentials the writes were configured with.
        return kopf.ConnectionInfo(**credentials(controller.kube.api.configuration))

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.WARNING  # our own events are explicit
        # No cluster-wide discovery: the controller knows its resources and namespaces, and
        # least-privilege RBAC grants no list on CRDs or namespaces.
        settings.scanning.disabled = True
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=f"controller.{GROUP}"
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=f"controller.{GROUP}"
        )
        await server.start(*listen)
        await controller.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        # Reports first: one accepted after the last persist would be acknowledged and lost.
        await server.stop()
        await controller.stop()

    @kopf.on.event(GROUP, VERSION, "syncjobs", registry=registry)
    def syncjob_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.remember("SyncJob", event.get("type"), event["object"])

    @kopf.on.event(GROUP, VERSION, "syncschedules", registry=registry)
    def schedule_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.remember("SyncSchedule", event.get("type"), event["object"])

    @kopf.on.event("batch", "v1", "jobs", labels=managed, registry=registry)
    def job_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.remember("Job", event.get("type"), event["object"])

    @kopf.on.event("", "v1", "pods", labels=managed, registry=registry)
    def pod_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.remember("Pod", event.get("type"), event["object"])

    return registry
