"""The local coordinator: what the controller does for a cluster, for ``fleetsync run``.

It leases each vendor's budget to the shard processes, keeps their checkpoints so a killed
shard resumes, and folds their reports into the run's progress — with the same
:func:`~fleetsync.coordination.fold.fold_report` the controller uses. It keeps the progress
in the run's state dir (at most once a second, and at the end) so that ``fleetsync run``
started again after Ctrl-C or ``kill -9`` resumes. It listens on loopback only and accepts
reports only with the run's one-time token.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fleetsync.api.progress import ReplyWire, ReportWire
from fleetsync.coordination.budgets import BudgetBook
from fleetsync.coordination.fold import fold_report
from fleetsync.coordination.progress import RunProgress
from fleetsync.coordination.timing import LeaseTiming
from fleetsync.local.state import RunState

if TYPE_CHECKING:  # imported when the server starts: a one-process run never needs it
    from aiohttp import web

__all__ = ["InProcessCoordinator", "LocalCoordinator"]


class LocalCoordinator:
    def __init__(
        self,
        progress: RunProgress,
        *,
        clock: Callable[[], float] = time.time,
        timing: LeaseTiming | None = None,
        state: RunState | None = None,
        persist_every: float = 0.0,
    ) -> None:
        self.progress = progress
        # No hold-off on resuming: the runner has stopped the interrupted run's workers (and
        # on Linux they die with their runner), so no grant of theirs is still used.
        self.budgets = BudgetBook(timing or LeaseTiming())
        self.clock = clock
        self.token = secrets.token_urlsafe(32)
        self.stopping = False
        self._runner: web.AppRunner | None = None
        self._socket: socket.socket | None = None
        self.url: str | None = None
        self._state = state
        self._persist_every = persist_every
        self._persisted_at = -float("inf")
        self._dirty = False

    def handle(self, report: ReportWire) -> ReplyWire:
        """Fold a report in and keep it before replying: a shard treats a reply as "my
        checkpoint is safe" (it then fetches past it), so a ``kill -9`` of the runner right
        after must not lose it — by default every report is written to the state dir first
        (a small file, about one write per shard per second)."""
        now = self.clock()
        reply = fold_report(self.progress, self.budgets, report, now, stop=self.stopping)
        self._dirty = True
        self.persist(now)
        return reply

    def persist(self, now: float, *, final: bool = False) -> None:
        """Keep the progress in the state dir: at most every ``persist_every`` seconds, and
        always when ``final``."""
        if self._state is None or not (final or self._dirty):
            return
        if not final and now - self._persisted_at < self._persist_every:
            return
        self._state.save(self.progress.snapshot(), finished=final and self.progress.finished)
        self._persisted_at = now
        self._dirty = False

    async def _post(self, request: web.Request) -> web.Response:
        from aiohttp import web

        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(supplied.encode(), self.token.encode()):
            return web.json_response({"error": "unauthorized"}, status=401)
        report: ReportWire = await request.json()
        return web.json_response(self.handle(report))

    def listen(self) -> str:
        """Bind the report endpoint's socket (loopback, a free port) and return its URL.

        Workers may be started at once: their first connections wait in the socket's
        backlog until :meth:`serve` answers, so aiohttp's import and start (~0.15 s) overlap
        theirs instead of delaying them."""
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=1024)
        port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def serve(self) -> None:
        """Answer reports on the socket :meth:`listen` bound. aiohttp is imported in a
        thread: imported here, it held the event loop ~0.15 s before the task starting the
        workers ran (they started only after it)."""
        web = await asyncio.to_thread(importlib.import_module, "aiohttp.web")

        if self._socket is None:
            self.listen()
        sock = self._socket
        assert sock is not None  # bound by listen()
        app = web.Application()
        app.router.add_post("/v1/report", self._post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._socket is not None:
            self._socket.close()


class InProcessCoordinator:
    """Shards in the runner's own process talk to the coordinator directly."""

    keeps_reports = True

    def __init__(self, coordinator: LocalCoordinator) -> None:
        self._coordinator = coordinator

    async def report(self, report: ReportWire) -> ReplyWire | None:
        return self._coordinator.handle(report)

    async def aclose(self) -> None:
        return None
