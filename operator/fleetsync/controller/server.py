"""The controller's HTTP side: worker progress in, budgets and breaker verdicts out;
``/metrics`` and ``/healthz``.

A worker proves who it is with its projected service-account token (audience
``fleetsync.dev``). The API server's TokenReview says which pod the token was issued for;
the pod's labels say which run and shard it belongs to. A pod may report only for its
own run and shard (403 otherwise), so worker pods need no Kubernetes RBAC at all.
Reviews are cached by a hash of the token for a short while: one review per pod, not one
per report.

The server sees the controller only through ``ReportDesk``: accept a report, persist a
run, find a pod, review a token, say whether the loop is alive.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fleetsync.api.progress import FINAL_STATES, ReplyWire, ReportWire
from fleetsync.controller.build import LABEL_RUN, TOKEN_AUDIENCE
from fleetsync.controller.metrics import ControllerMetrics

__all__ = ["Identity", "ReportDesk", "ReportServer", "TokenReviewer"]

log = logging.getLogger("fleetsync.controller.server")
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
_POD_NAME = "authentication.kubernetes.io/pod-name"
_POD_UID = "authentication.kubernetes.io/pod-uid"


class ReportDesk(Protocol):
    """What the report server needs from the controller, and nothing more."""

    def accept_report(self, namespace: str, report: ReportWire) -> ReplyWire | None: ...

    async def persist_run(self, namespace: str, run: str) -> bool: ...

    async def find_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    async def review_token(self, token: str) -> Mapping[str, Any]: ...

    def healthy(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Identity:
    namespace: str
    pod: str
    pod_uid: str | None


class TokenReviewer:
    def __init__(self, desk: ReportDesk, *, ttl: float = 60.0) -> None:
        self.desk = desk
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Identity | None]] = {}

    async def review(self, token: str) -> Identity | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        identity = self._identity(await self.desk.review_token(token))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, identity)
        return identity

    @staticmethod
    def _identity(status: Mapping[str, Any]) -> Identity | None:
        if not status.get("authenticated") or TOKEN_AUDIENCE not in (status.get("audiences") or []):
            return None
        user = status.get("user") or {}
        parts = (user.get("username") or "").split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            return None
        extra = user.get("extra") or {}
        pods = extra.get(_POD_NAME) or []
        if not pods:
            return None  # not a pod-bound token: cannot be tied to a shard
        uids = extra.get(_POD_UID) or [None]
        return Identity(namespace=parts[2], pod=pods[0], pod_uid=uids[0])


class ReportServer:
    def __init__(self, desk: ReportDesk, metrics: ControllerMetrics) -> None:
        self.desk = desk
        self.metrics = metrics
        self.reviewer = TokenReviewer(desk)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/v1/report", self.report)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _pod(self, identity: Identity) -> Mapping[str, Any] | None:
        pod = await self.desk.find_pod(identity.namespace, identity.pod)
        if pod is None:
            return None
        if identity.pod_uid and pod["metadata"].get("uid") != identity.pod_uid:
            return None
        return pod

    async def report(self, request: web.Request) -> web.Response:
        metric = self.metrics.reports
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            metric.labels("unauthenticated").inc()
            return web.json_response({"error": "a bearer token is required"}, status=401)
        identity = await self.reviewer.review(header.removeprefix("Bearer ").strip())
        if identity is None:
            metric.labels("unauthenticated").inc()
            return web.json_response({"error": "token not accepted"}, status=401)
        try:
            report: ReportWire = await request.json()
            run, shard, pod_name = report["run"], int(report["shard"]), report["pod"]
        except (ValueError, KeyError, TypeError):
            metric.labels("invalid").inc()
            return web.json_response({"error": "malformed report"}, status=400)
        pod = await self._pod(identity)
        meta = (pod or {}).get("metadata") or {}
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        if (
            pod is None
            or labels.get(LABEL_RUN) != run
            or annotations.get(COMPLETION_INDEX) != str(shard)
            or pod_name != identity.pod
        ):
            metric.labels("forbidden").inc()
            log.warning(
                "refused a report for %s/%s shard %s from pod %s/%s",
                identity.namespace,
                run,
                shard,
                identity.namespace,
                identity.pod,
            )
            return web.json_response(
                {"error": "this pod may report only for its own run and shard"}, status=403
            )
        reply = self.desk.accept_report(identity.namespace, report)
        if reply is None:
            metric.labels("unknown-run").inc()
            return web.json_response({"error": "run not known yet; retry"}, status=503)
        if report["state"] in FINAL_STATES and not await self.desk.persist_run(
            identity.namespace, report["run"]
        ):
            # The worker exits once its last report is acknowledged: acknowledge only what
            # a restarted controller will find, or those counts would vanish with this one.
            metric.labels("not-persisted").inc()
            return web.json_response({"error": "progress not persisted; retry"}, status=503)
        metric.labels("accepted").inc()
        return web.json_response(reply)

    async def metrics_page(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        if not self.desk.healthy():
            return web.json_response({"status": "reconcile loop stuck"}, status=503)
        return web.json_response({"status": "ok"})
