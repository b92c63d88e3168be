"""The controller's small rooms: the watch cache's label indexes and per-object backoff."""

from __future__ import annotations

import copy
import logging
import random
from typing import Any

import pytest
from conftest import SYNCJOB, SYNCJOB_KEY, controller_knowing_syncjob

from fleetsync.controller.cache import WatchCache
from fleetsync.controller.failures import BACKOFF_CAP_SECONDS, FailureBackoff


def body(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "energy", "labels": labels}}


def test_indexes_follow_adds_relabels_and_deletes() -> None:
    cache = WatchCache()
    cache.remember("Pod", "ADDED", body("p0", **{"fleetsync.dev/run": "r1"}))
    cache.remember("Pod", "ADDED", body("p1", **{"fleetsync.dev/run": "r1"}))
    cache.remember("Pod", "ADDED", body("q0", **{"fleetsync.dev/run": "r2"}))
    assert [p["metadata"]["name"] for p in cache.pods_of(("energy", "r1"))] == ["p0", "p1"]
    cache.remember("Pod", "MODIFIED", body("p1", **{"fleetsync.dev/run": "r2"}))
    assert [p["metadata"]["name"] for p in cache.pods_of(("energy", "r2"))] == ["p1", "q0"]
    cache.remember("Pod", "DELETED", body("p0"))
    assert cache.pods_of(("energy", "r1")) == []
    cache.remember("SyncJob", "ADDED", body("run-a", **{"fleetsync.dev/schedule": "s"}))
    gone = body("run-b", **{"fleetsync.dev/schedule": "s"})
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    cache.remember("SyncJob", "ADDED", gone)
    assert [r["metadata"]["name"] for r in cache.runs_of("energy", "s")] == ["run-a"]
    assert cache.runs_of("other", "s") == []


def test_a_failing_object_backs_off_within_its_bounds(caplog: pytest.LogCaptureFixture) -> None:
    backoff = FailureBackoff(1.0, rng=random.Random(7))
    key = ("energy", "broken")
    delays = []
    with caplog.at_level(logging.WARNING, logger="fleetsync.controller"):
        for _ in range(12):
            try:
                raise RuntimeError("boom")
            except RuntimeError as error:
                delays.append(backoff.failed("SyncJob", key, 0.0, error))
    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(BACKOFF_CAP_SECONDS, 2.0 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert not backoff.due("SyncJob", key, delays[-1] - 1) and backoff.due("SyncJob", key, 301)
    assert backoff.due("SyncJob", ("energy", "fine"), 0.0)  # others are not held up
    assert sum(1 for r in caplog.records if r.exc_info) == 1  # one traceback, then one-liners
    backoff.succeeded("SyncJob", key)
    assert backoff.attempts("SyncJob", key) == 0 and backoff.due("SyncJob", key, 0.0)


class Refusing:
    """An API that refuses every create: the SyncJob's reconcile keeps failing."""

    def __init__(self) -> None:
        self.creates = 0

    async def read_config_map(self, namespace: str, name: str) -> None:
        return None

    async def create(self, body: dict[str, Any]) -> bool:
        self.creates += 1
        raise RuntimeError("admission webhook unavailable")


async def test_the_loop_backs_a_failing_object_off_and_retries_a_new_generation() -> None:
    api = Refusing()
    controller = controller_knowing_syncjob(api)
    controller.failures = FailureBackoff(60.0)  # a first retry 30-60 s later, not a tick
    await controller.reconcile_all()
    await controller.reconcile_all()  # the next tick: still backing off
    assert api.creates == 1 and controller.failures.attempts("SyncJob", SYNCJOB_KEY) == 1
    edited = copy.deepcopy(SYNCJOB)
    edited["metadata"]["generation"] = 2
    controller.remember("SyncJob", "MODIFIED", edited)
    await controller.reconcile_all()  # someone changed it: tried at once
    assert api.creates == 2
