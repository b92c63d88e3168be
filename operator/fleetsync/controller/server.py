"""The controller's HTTP side: worker progress in, budgets and breaker verdicts out;
``/metrics`` and ``/healthz``.

A worker proves who it is with its projected service-account token (audience
``fleetsync.dev``). The API server's TokenReview says which pod and ServiceAccount the
token was issued for; reportauth.py then checks the report against the cluster (the pod is
the run's Job's, the Job the SyncJob's, the shard the pod's), so worker pods need no
Kubernetes RBAC at all. Reviews are cached by a hash of the token in a bounded TTL cache:
one review per pod, not one per report. Every refusal is a 4xx (503 only for "not known
here yet; retry"); no body, however malformed, gets a 500.

The server sees the controller only through ``ReportDesk``: accept a report, persist a
run, find a pod, describe a run, review a token, say whether the loop is alive.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Protocol

from aiohttp import web
from cachetools import TTLCache
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fleetsync.api.progress import FINAL_STATES, ReplyWire, ReportWire
from fleetsync.controller.build import LABEL_RUN, TOKEN_AUDIENCE
from fleetsync.controller.metrics import ControllerMetrics
from fleetsync.controller.objects import Pod, TokenReviewStatus
from fleetsync.controller.reportauth import (
    Identity,
    Refusal,
    RunView,
    check_reporter,
    parse_report,
)

__all__ = ["REPORT_MAX_BYTES", "Identity", "ReportDesk", "ReportServer", "TokenReviewer"]

log = logging.getLogger("fleetsync.controller.server")
REPORT_MAX_BYTES = 1024 * 1024  # larger bodies get 413
_POD_NAME = "authentication.kubernetes.io/pod-name"
_POD_UID = "authentication.kubernetes.io/pod-uid"
_METRIC_OF = {400: "invalid", 403: "forbidden", 413: "too-large", 503: "unknown-run"}


class ReportDesk(Protocol):
    """What the report server needs from the controller, and nothing more."""

    def accept_report(self, namespace: str, report: ReportWire) -> ReplyWire | None: ...

    async def persist_run(self, namespace: str, run: str) -> bool: ...

    async def find_pod(self, namespace: str, name: str) -> Pod | None: ...

    def run_view(self, namespace: str, run: str) -> RunView | None: ...

    async def review_token(self, token: str) -> TokenReviewStatus: ...

    def healthy(self) -> bool: ...


class TokenReviewer:
    """TokenReviews, cached by token hash: at most ``size`` entries, each for ``ttl`` s."""

    def __init__(self, desk: ReportDesk, *, ttl: float = 60.0, size: int = 10_000) -> None:
        self.desk = desk
        self._cache: TTLCache[str, Identity | None] = TTLCache(
            maxsize=size, ttl=ttl, timer=time.monotonic
        )

    async def review(self, token: str) -> Identity | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        if digest in self._cache:
            return self._cache[digest]
        identity = self._identity(await self.desk.review_token(token))
        self._cache[digest] = identity
        return identity

    @staticmethod
    def _identity(status: TokenReviewStatus) -> Identity | None:
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
        uids = extra.get(_POD_UID) or []
        return Identity(
            namespace=parts[2],
            service_account=parts[3],
            pod=pods[0],
            pod_uid=uids[0] if uids else None,
        )


def _refuse(refusal: Refusal) -> web.Response:
    return web.json_response({"error": refusal.reason}, status=refusal.status)


class ReportServer:
    def __init__(self, desk: ReportDesk, metrics: ControllerMetrics) -> None:
        self.desk = desk
        self.metrics = metrics
        self.reviewer = TokenReviewer(desk)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=REPORT_MAX_BYTES)
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

    async def _pod(self, identity: Identity) -> Pod | None:
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
        refusal, report = await self._judge(identity, request)
        if refusal is not None:
            metric.labels(_METRIC_OF.get(refusal.status, "forbidden")).inc()
            if refusal.status == 403:
                log.warning(
                    "refused a report from pod %s/%s: %s",
                    identity.namespace,
                    identity.pod,
                    refusal.reason,
                )
            return _refuse(refusal)
        assert report is not None
        return await self._accept(identity, report)

    async def _judge(
        self, identity: Identity, request: web.Request
    ) -> tuple[Refusal | None, ReportWire | None]:
        """Who may say this, then is it well formed: 413, 403 for another run, 400, 403."""
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return Refusal(413, f"a report may not exceed {REPORT_MAX_BYTES} bytes"), None
        pod = await self._pod(identity)
        if pod is None:
            return Refusal(403, "the token's pod is not known"), None
        own_run = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_RUN)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return Refusal(400, "body: not a JSON document"), None
        claimed = body.get("run") if isinstance(body, dict) else None
        if isinstance(claimed, str) and claimed != own_run:
            return Refusal(403, "this pod may report only for its own run"), None
        report = parse_report(body)
        if isinstance(report, Refusal):
            return report, None
        view = self.desk.run_view(identity.namespace, report["run"])
        if view is None:
            return Refusal(503, "run not known yet; retry"), None
        return check_reporter(identity, report, pod, view), report

    async def _accept(self, identity: Identity, report: ReportWire) -> web.Response:
        metric = self.metrics.reports
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
