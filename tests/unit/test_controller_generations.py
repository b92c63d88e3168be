"""Every SyncJob reconcile, finished or not, observes the spec's generation (issue 15,
item 1): a finished run's status is restamped, never re-run; a spec refused as invalid is
validated again once edited and runs when fixed."""

from __future__ import annotations

import copy
from typing import Any

from conftest import SYNCJOB, SYNCJOB_KEY, controller_knowing_syncjob

KEY = SYNCJOB_KEY


class Api:
    """Records what the controller writes."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.created: list[str] = []

    async def patch_syncjob_status(self, namespace: str, name: str, status: Any) -> None:
        self.statuses.append(status)

    async def create(self, body: dict[str, Any]) -> bool:
        self.created.append(body["kind"])
        return True

    async def read_config_map(self, namespace: str, name: str) -> None:
        return None

    async def event(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def warning_events(self, namespace: str, uid: str) -> list[Any]:
        return []

    async def replace_config_map_data(self, *args: Any) -> None:
        return None


def syncjob(generation: int, status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(SYNCJOB)
    body["metadata"]["generation"] = generation
    body["spec"].update(spec)
    body["status"] = status
    return body


def condition(kind: str, reason: str, generation: int) -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "observedGeneration": generation}


SUCCEEDED = {
    "phase": "Succeeded",
    "completionTime": "2026-06-01T10:00:00Z",
    "observedGeneration": 1,
    "conditions": [condition("Ready", "Succeeded", 1)],
}


async def test_an_edited_finished_run_observes_the_generation_and_is_not_rerun() -> None:
    api = Api()
    controller = controller_knowing_syncjob(api)
    controller.remember("SyncJob", "MODIFIED", syncjob(2, SUCCEEDED))
    await controller.reconcile_syncjob(KEY)
    (status,) = api.statuses
    assert status["phase"] == "Succeeded" and status["observedGeneration"] == 2
    assert [c["observedGeneration"] for c in status["conditions"]] == [2]
    assert api.created == []
    controller.remember("SyncJob", "MODIFIED", syncjob(2, status))
    await controller.reconcile_syncjob(KEY)
    assert len(api.statuses) == 1  # already current: nothing written


async def test_an_invalid_spec_that_is_fixed_runs() -> None:
    api = Api()
    controller = controller_knowing_syncjob(api)
    broken = syncjob(1, {}, sharding={"shards": 0})
    controller.remember("SyncJob", "MODIFIED", broken)
    await controller.reconcile_syncjob(KEY)
    failed = api.statuses[-1]
    assert failed["phase"] == "Failed" and failed["completionTime"]
    assert any("sharding" in c["message"] for c in failed["conditions"])
    # Edited, still invalid: a new message for the new generation.
    controller.remember("SyncJob", "MODIFIED", syncjob(2, failed, sharding={"shards": -1}))
    await controller.reconcile_syncjob(KEY)
    again = api.statuses[-1]
    assert again["phase"] == "Failed" and again["observedGeneration"] == 2
    assert api.created == []
    # Fixed: the status starts over and the run is planned.
    controller.remember("SyncJob", "MODIFIED", syncjob(3, again))
    await controller.reconcile_syncjob(KEY)
    fresh = api.statuses[-1]
    assert fresh["phase"] == "Pending" and fresh["observedGeneration"] == 3
    assert fresh["completionTime"] is None  # a JSON null: the merge patch removes it
    controller.remember("SyncJob", "MODIFIED", syncjob(3, fresh))
    await controller.reconcile_syncjob(KEY)
    assert api.created == ["ConfigMap", "Job"]
