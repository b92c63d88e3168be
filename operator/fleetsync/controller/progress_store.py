"""A run's in-memory state, and its progress ConfigMap: load once, write at most every
``interval`` (or now, for a shard's final report), one write at a time.

A restarted controller rebuilds every run from that ConfigMap, so a report is acknowledged
as final only once it is written (see intake.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleetsync.api.constants import Phase
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.controller.build import build_config_map, progress_config_map_name
from fleetsync.controller.cache import Key
from fleetsync.controller.kube import Kube
from fleetsync.controller.plan import RunPlan
from fleetsync.coordination.progress import RunProgress

__all__ = ["ProgressStore", "RunState"]


@dataclass(slots=True)
class RunState:
    """What the controller holds for one run between ticks."""

    uid: str
    spec: SyncJobSpec
    plan: RunPlan
    progress: RunProgress
    loaded: bool = False
    progress_dirty: bool = False
    progress_written: float = 0.0
    progress_cm_exists: bool = False
    # Progress came from an earlier controller: it may have granted budgets still in use.
    inherited: bool = False
    status_written: float = 0.0
    last_status: dict[str, Any] | None = None
    phase: Phase | None = None
    breakers: dict[str, str] = field(default_factory=dict)
    scaled: float = 0.0
    throttled_at_scale: int = 0
    may_want: Callable[[str], bool] | None = None  # rate-limit keys of its spec (reportauth)
    # One progress write at a time: a snapshot taken earlier must never land after a later.
    persisting: asyncio.Lock = field(default_factory=asyncio.Lock)


class ProgressStore:
    """Reads and writes runs' progress ConfigMaps."""

    def __init__(
        self,
        kube: Kube,
        syncjob: Callable[[Key], dict[str, Any] | None],
        *,
        interval: float,
    ) -> None:
        self.kube = kube
        self._syncjob = syncjob  # the cached body, to own a ConfigMap created here
        self.interval = interval

    async def load(self, key: Key, state: RunState) -> None:
        """Restore what a previous controller wrote; once per run."""
        if state.loaded:
            return
        cm = await self.kube.read_config_map(key[0], progress_config_map_name(key[1]))
        if cm is not None:
            state.progress_cm_exists = True
            raw = (cm.get("data") or {}).get("progress.json")
            if raw:
                state.progress.restore(json.loads(raw))
                state.inherited = bool(state.progress.views)
        state.loaded = True

    async def persist(self, key: Key, state: RunState, *, force: bool = False) -> None:
        """Write the run's progress if it changed and ``interval`` has passed (or ``force``)."""
        async with state.persisting:
            now = time.time()
            if not state.progress_dirty:
                return
            if not force and now - state.progress_written < self.interval:
                return
            snapshot = json.dumps(state.progress.snapshot(), separators=(",", ":"))
            # Cleared before the write: a report accepted while it is in flight marks the
            # run dirty again instead of being taken for written.
            state.progress_dirty = False
            try:
                await self._write(key, state, {"progress.json": snapshot})
            except BaseException:
                state.progress_dirty = True
                raise
            state.progress_written = now

    async def _write(self, key: Key, state: RunState, data: dict[str, str]) -> None:
        name = progress_config_map_name(key[1])
        if state.progress_cm_exists:
            await self.kube.replace_config_map_data(key[0], name, data)
            return
        body = self._syncjob(key)
        if body is None:
            raise RuntimeError(f"SyncJob {key[0]}/{key[1]} not known: progress not written")
        cm = build_config_map(body, state.spec)
        cm["metadata"]["name"] = name
        cm["data"] = data
        if not await self.kube.create(cm):
            await self.kube.replace_config_map_data(key[0], name, data)
        state.progress_cm_exists = True
