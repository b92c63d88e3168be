"""The controller's settings: one frozen object, passed to every room that needs it."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetsync.controller.build import WorkerSettings
from fleetsync.coordination.timing import LeaseTiming

__all__ = ["ControllerSettings"]


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    worker: WorkerSettings
    tick_seconds: float = 1.0
    status_interval: float = 2.0  # at most one status write per SyncJob per this
    progress_interval: float = 2.0
    lease: LeaseTiming = field(default_factory=LeaseTiming)
    pod_start_grace: float = 20.0
    scale_interval: float = 30.0
