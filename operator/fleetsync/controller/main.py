"""``fleetsync controller``: kopf's operator, the reconcile loop and the report server in
one process, stopped cleanly on SIGTERM.

Run one replica (the chart uses ``strategy: Recreate``): kopf's peering pauses rather than
elects (KOPF.md), and worker reports must reach the one instance that holds the run state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import kopf

from fleetsync.controller.build import WorkerSettings
from fleetsync.controller.handlers import build_registry
from fleetsync.controller.kube import Kube, connect
from fleetsync.controller.runtime import Controller, ControllerSettings
from fleetsync.controller.server import ReportServer

__all__ = ["ControllerOptions", "controller_main", "file_clock"]


@dataclass(frozen=True, slots=True)
class ControllerOptions:
    namespaces: Sequence[str]
    listen_host: str
    listen_port: int
    worker: WorkerSettings
    kubeconfig: str | None = None
    clock_file: Path | None = None
    tick_seconds: float = 1.0


def file_clock(path: Path) -> Callable[[], float]:
    """A clock the tests set: the file holds epoch seconds; absent or empty → real time.
    Lets the e2e suite move a SyncSchedule's time without waiting for minutes."""

    def now() -> float:
        try:
            text = path.read_text().strip()
        except OSError:
            return time.time()
        return float(text) if text else time.time()

    return now


async def _run(options: ControllerOptions) -> None:
    api = await connect(options.kubeconfig)
    kube = Kube(api)
    clock = file_clock(options.clock_file) if options.clock_file else time.time
    controller = Controller(
        kube,
        ControllerSettings(worker=options.worker, tick_seconds=options.tick_seconds),
        clock=clock,
    )
    server = ReportServer(controller, controller.metrics)
    registry = build_registry(controller, server, (options.listen_host, options.listen_port))
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))
    try:
        await kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not options.namespaces,
            namespaces=list(options.namespaces),
            stop_flag=stop,
        )
    finally:
        await kube.close()


def controller_main(options: ControllerOptions) -> int:
    # force: the CLI group has already configured logging (WARNING unless -v); the
    # controller's level is the chart's controller.logLevel.
    logging.basicConfig(
        level=os.environ.get("FLEETSYNC_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # kopf logs every handled event at INFO: one line per pod update of every run.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(_run(options))
    return 0
