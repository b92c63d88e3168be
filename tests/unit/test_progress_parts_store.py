"""How the progress parts are written: the others before part 0, only those that changed,
and whatever write fails, a restarted controller finds every shard whole (one of its
snapshots). The Kubernetes API is an in-memory ConfigMap store here;
``tests/e2e/test_progress_parts.py`` runs the same through the real API server."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SYNCJOB

from fleetsync.api.progress import ReportWire
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.controller.plan import RunPlan
from fleetsync.controller.progress_parts import SHARDS_PER_PART
from fleetsync.controller.progress_store import ProgressStore, RunState
from fleetsync.coordination.progress import RunProgress

SHARDS = 3 * SHARDS_PER_PART
KEY = ("energy", "plants")


class ConfigMaps:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}
        self.writes: list[str] = []
        self.refuse: set[str] = set()

    async def create(self, body: dict[str, Any]) -> bool:
        self._write(body["metadata"]["name"], body["data"])
        return True

    async def replace_config_map_data(self, namespace: str, name: str, data: Any) -> None:
        self._write(name, dict(data))

    async def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"data": self.data[name]} if name in self.data else None

    def _write(self, name: str, data: dict[str, str]) -> None:
        if name in self.refuse:
            raise ConnectionError("API server unavailable")
        self.writes.append(name)
        self.data[name] = data


def report(shard: int, state: str, synced: int) -> ReportWire:
    return {
        "run": "plants", "shard": shard, "pod": f"plants-{shard}", "seq": synced + 1,  # type: ignore[typeddict-item]
        "state": state, "shardTotal": 10, "seen": 10,
        "checkpoint": {"watermark": synced - 1, "above": "", "counts": {"synced": synced}},
        "vendors": [], "failedSample": [], "wants": {},
        "cost": {"vendorCalls": synced, "sinkCalls": 1, "writeUnits": synced, "readUnits": 0,
                 "unprocessedItems": 0, "throttles": 0},
    }  # fmt: skip


def new_state() -> RunState:
    spec = SyncJobSpec.model_validate(SYNCJOB["spec"])
    return RunState("u1", spec, RunPlan(SHARDS, 10, "test"), RunProgress("plants", SHARDS))


async def restarted(store: ConfigMaps) -> RunState:
    state = new_state()
    await ProgressStore(store, lambda _: SYNCJOB, interval=0.0).load(KEY, state)  # type: ignore[arg-type]
    return state


def synced(state: RunState) -> dict[int, int]:
    return {s: (state.progress.resume_for(s) or {"counts": {}})["counts"]["synced"]
            for s in state.progress.views}  # fmt: skip


async def test_parts_are_written_before_part_0_and_only_when_changed() -> None:
    store = ConfigMaps()
    progress_store = ProgressStore(store, lambda _: SYNCJOB, interval=0.0)  # type: ignore[arg-type]
    state = new_state()
    state.loaded = True
    for shard in range(SHARDS):
        state.progress.take(report(shard, "running", 3), 1.0)
    state.progress_dirty = True
    await progress_store.persist(KEY, state, force=True)
    assert store.writes == ["plants-progress-1", "plants-progress-2", "plants-progress"]
    store.writes.clear()
    state.progress.take(report(SHARDS_PER_PART + 1, "running", 5), 2.0)
    state.progress_dirty = True
    await progress_store.persist(KEY, state, force=True)
    assert store.writes == ["plants-progress-1"]
    back = await restarted(store)
    assert synced(back) == synced(state) and back.inherited


async def test_a_write_that_fails_halfway_leaves_every_shard_whole() -> None:
    store = ConfigMaps()
    progress_store = ProgressStore(store, lambda _: SYNCJOB, interval=0.0)  # type: ignore[arg-type]
    state = new_state()
    state.loaded = True
    for shard in range(SHARDS):
        state.progress.take(report(shard, "running", 3), 1.0)
    state.progress_dirty = True
    await progress_store.persist(KEY, state, force=True)
    for shard in range(SHARDS):
        state.progress.take(report(shard, "done", 10), 2.0)
    state.progress_dirty = True
    store.refuse = {"plants-progress-2"}
    with pytest.raises(ConnectionError):
        await progress_store.persist(KEY, state, force=True)
    assert state.progress_dirty, "written again on the next persist"
    back = await restarted(store)
    # Part 1 was written, part 2 and part 0 were not: each shard is at one of its snapshots.
    expected = {s: 10 if s // SHARDS_PER_PART == 1 else 3 for s in range(SHARDS)}
    assert synced(back) == expected
    store.refuse = set()
    await progress_store.persist(KEY, state, force=True)
    assert synced(await restarted(store)) == dict.fromkeys(range(SHARDS), 10)
