"""A shard's last report is acknowledged only once a restarted controller would find it.

The worker pod exits when its final report is acknowledged; if the controller then dies
before its periodic progress write, those counts are gone (found by the e2e suite killing
the chart's controller pod: 2,000 items in the sink, 1,472 in status). The Kubernetes API
is replaced here by an in-memory ConfigMap store; the e2e suite runs the real one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from conftest import SYNCJOB, SYNCJOB_KEY, controller_knowing_syncjob

from fleetsync.api.progress import ReportWire
from fleetsync.controller.runtime import Controller

KEY = SYNCJOB_KEY


class ConfigMaps:
    """What the controller writes progress to; writes can be slowed or refused."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}
        self.fail = False
        self.delays: list[float] = []

    async def create(self, body: dict[str, Any]) -> bool:
        await self._write(body["metadata"]["name"], body["data"])
        return True

    async def replace_config_map_data(self, namespace: str, name: str, data: Any) -> None:
        await self._write(name, dict(data))

    async def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"data": self.data[name]} if name in self.data else None

    async def _write(self, name: str, data: dict[str, str]) -> None:
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        if self.fail:
            raise ConnectionError("API server unavailable")
        self.data[name] = data

    def shards(self) -> dict[str, str]:
        snapshot = json.loads(self.data["plants-progress"]["progress.json"])
        return {shard: view["state"] for shard, view in snapshot["views"].items()}


def report(shard: int, state: str, synced: int) -> ReportWire:
    return {
        "run": "plants", "shard": shard, "pod": f"plants-{shard}", "state": state,  # type: ignore[typeddict-item]
        "shardTotal": 10, "seen": 10,
        "checkpoint": {"watermark": synced, "above": "", "counts": {"synced": synced}},
        "vendors": [], "failedSample": [], "wants": {},
        "cost": {"vendorCalls": synced, "sinkCalls": 1, "writeUnits": synced, "readUnits": 0,
                 "unprocessedItems": 0, "throttles": 0},
    }  # fmt: skip


async def controller_with_run(store: ConfigMaps) -> Controller:
    controller = controller_knowing_syncjob(store)
    state = await controller.syncjobs.run_state(KEY, SYNCJOB)
    assert state is not None
    state.loaded = True
    return controller


async def test_a_final_report_is_persisted_before_it_is_acknowledged() -> None:
    store = ConfigMaps()
    controller = await controller_with_run(store)
    assert controller.accept_report("energy", report(0, "running", 4)) is not None
    assert "plants-progress" not in store.data  # periodic writes wait for their interval
    assert controller.accept_report("energy", report(0, "done", 10)) is not None
    assert await controller.persist_run("energy", "plants")
    assert store.shards() == {"0": "done"}
    # A controller started from that ConfigMap counts the shard's items.
    again = await controller_with_run(store)
    again.runs[KEY].loaded = False
    await again.store.load(KEY, again.runs[KEY])
    assert again.runs[KEY].progress.items().synced == 10


async def test_an_unwritable_progress_is_not_acknowledged_and_stays_dirty() -> None:
    store = ConfigMaps()
    controller = await controller_with_run(store)
    controller.accept_report("energy", report(1, "done", 10))
    store.fail = True
    assert not await controller.persist_run("energy", "plants")
    assert controller.runs[KEY].progress_dirty  # written by the next attempt
    store.fail = False
    assert await controller.persist_run("energy", "plants")
    assert store.shards() == {"1": "done"}


async def test_an_older_snapshot_never_lands_after_a_newer_one() -> None:
    store = ConfigMaps()
    controller = await controller_with_run(store)
    controller.accept_report("energy", report(0, "running", 4))
    store.delays = [0.2]  # the first write is slow; a final report arrives meanwhile
    first = asyncio.create_task(controller.persist_run("energy", "plants"))
    await asyncio.sleep(0.05)
    controller.accept_report("energy", report(0, "done", 10))
    assert await controller.persist_run("energy", "plants")
    assert await first
    assert store.shards() == {"0": "done"}
