"""A run's in-memory state, and its progress ConfigMaps: load once, write at most every
``interval`` (or now, for a shard's final report), one write at a time.

A restarted controller rebuilds every run from those ConfigMaps, so a report is acknowledged
as final only once it is written (see intake.py). What is kept, and how it is cut into
parts that each fit a ConfigMap, is :mod:`fleetsync.controller.progress_parts`; here only
the parts that changed are written, the others first and part 0 last.
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
from fleetsync.controller.objects import SyncJobObject
from fleetsync.controller.plan import RunPlan
from fleetsync.controller.progress_parts import join_parts, part_count, split_parts
from fleetsync.coordination.progress import RunProgress

__all__ = ["ProgressStore", "RunState", "part_name"]


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
    # The JSON last written to (or read from) each progress part: unchanged parts are not
    # written again, and a part in here exists.
    written: dict[int, str] = field(default_factory=dict)
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
        syncjob: Callable[[Key], SyncJobObject | None],
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
        cm = await self.kube.read_config_map(key[0], part_name(key[1], 0))
        if cm is not None:
            state.progress_cm_exists = True
            raw = (cm.get("data") or {}).get("progress.json")
            if raw:
                head = json.loads(raw)
                state.written[0] = raw
                parts = [await self._read_part(key, state, i) for i in range(1, part_count(head))]
                state.progress.restore(join_parts(head, parts))
                state.inherited = bool(state.progress.views)
        state.loaded = True

    async def _read_part(self, key: Key, state: RunState, index: int) -> dict[str, Any] | None:
        cm = await self.kube.read_config_map(key[0], part_name(key[1], index))
        raw = (cm.get("data") or {}).get("progress.json") if cm is not None else None
        if not raw:
            return None
        state.written[index] = raw
        part: dict[str, Any] = json.loads(raw)
        return part

    async def persist(self, key: Key, state: RunState, *, force: bool = False) -> None:
        """Write the run's progress if it changed and ``interval`` has passed (or ``force``)."""
        async with state.persisting:
            now = time.time()
            if not state.progress_dirty:
                return
            if not force and now - state.progress_written < self.interval:
                return
            parts = split_parts(state.progress.snapshot(), state.progress.shards)
            # Cleared before the write: a report accepted while it is in flight marks the
            # run dirty again instead of being taken for written.
            state.progress_dirty = False
            try:
                # Part 0 last: it names the parts, and holds the run-wide totals.
                for index in [*range(1, len(parts)), 0]:
                    if state.written.get(index) != parts[index]:
                        await self._write(key, state, index, {"progress.json": parts[index]})
                        state.written[index] = parts[index]
            except BaseException:
                state.progress_dirty = True
                raise
            state.progress_written = now

    async def _write(self, key: Key, state: RunState, index: int, data: dict[str, str]) -> None:
        name = part_name(key[1], index)
        exists = state.progress_cm_exists if index == 0 else index in state.written
        if exists:
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
        if index == 0:
            state.progress_cm_exists = True


def part_name(run: str, index: int) -> str:
    """The ConfigMap of progress part ``index``: part 0 keeps the name it always had."""
    base = progress_config_map_name(run)
    return base if index == 0 else f"{base}-{index}"
