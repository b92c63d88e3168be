"""The local coordinator: what the controller does for a cluster, for ``fleetsync run``.

It leases each vendor's budget to the shard processes, keeps their checkpoints so a killed
shard resumes, and folds their reports into the run's progress. It listens on loopback
only and accepts reports only with the run's one-time token.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable

from aiohttp import web

from fleetsync.api.progress import FINAL_STATES, ReplyWire, ReportWire
from fleetsync.coordination.budgets import BudgetBook
from fleetsync.coordination.progress import RunProgress
from fleetsync.coordination.timing import LeaseTiming

__all__ = ["InProcessCoordinator", "LocalCoordinator"]


class LocalCoordinator:
    def __init__(
        self,
        progress: RunProgress,
        *,
        clock: Callable[[], float] = time.time,
        timing: LeaseTiming | None = None,
    ) -> None:
        self.progress = progress
        self.budgets = BudgetBook(timing or LeaseTiming())
        self.clock = clock
        self.token = secrets.token_urlsafe(32)
        self.stopping = False
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    def handle(self, report: ReportWire) -> ReplyWire:
        now = self.clock()
        holder = f"{report['run']}/{report['shard']}"
        accepted = self.progress.accept(report, now)
        if not accepted:
            return ReplyWire(grants={}, breakers={}, stop=True, resume=None)
        if report["state"] in FINAL_STATES:
            self.budgets.release(holder, now)
            grants = {}
        else:
            grants = self.budgets.renew(holder, report["wants"], now)
        resume = (
            self.progress.resume_for(report["shard"]) if report["state"] == "starting" else None
        )
        return ReplyWire(
            grants=grants,
            breakers=self.progress.breaker_verdicts(),
            stop=self.stopping,
            resume=resume,
        )

    async def _post(self, request: web.Request) -> web.Response:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(supplied.encode(), self.token.encode()):
            return web.json_response({"error": "unauthorized"}, status=401)
        report: ReportWire = await request.json()
        return web.json_response(self.handle(report))

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/report", self._post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class InProcessCoordinator:
    """A single shard in the runner's own process talks to the coordinator directly."""

    keeps_reports = True

    def __init__(self, coordinator: LocalCoordinator) -> None:
        self._coordinator = coordinator

    async def report(self, report: ReportWire) -> ReplyWire | None:
        return self._coordinator.handle(report)

    async def aclose(self) -> None:
        return None
