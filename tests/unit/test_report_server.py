"""The report endpoint trusts nothing (issue 14, items 4 and 5): each forgery gets a 4xx
and changes nothing; random bodies never get a 5xx.

A real ``ReportServer`` over a real ``Controller``, with the Kubernetes API replaced by an
in-memory stand-in that answers TokenReviews (the e2e suite runs the real API server:
test_a_pod_may_report_only_for_its_own_run).
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from conftest import SYNCJOB, SYNCJOB_KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetsync.controller.build import TOKEN_AUDIENCE, WorkerSettings
from fleetsync.controller.runtime import Controller, ControllerSettings
from fleetsync.controller.server import REPORT_MAX_BYTES, ReportServer

KEY = SYNCJOB_KEY
POD = "plants-0-abc"


class Cluster:
    """What the controller asks the API: a TokenReview per new token, progress writes."""

    def __init__(self) -> None:
        self.account = "fleetsync-worker"
        self.writes = 0

    async def token_review(self, token: str, audience: str) -> dict[str, Any]:
        pod = token.removeprefix("pod:")
        user = {
            "username": f"system:serviceaccount:energy:{self.account}",
            "extra": {
                "authentication.kubernetes.io/pod-name": [pod],
                "authentication.kubernetes.io/pod-uid": [f"uid-{pod}"],
            },
        }
        return {"status": {"authenticated": True, "audiences": [TOKEN_AUDIENCE], "user": user}}

    async def read_pod(self, namespace: str, name: str) -> None:
        return None

    async def read_config_map(self, namespace: str, name: str) -> None:
        return None

    async def create(self, body: dict[str, Any]) -> bool:
        self.writes += 1
        return True

    async def replace_config_map_data(self, *args: Any) -> None:
        self.writes += 1


def owned_by(uid: str) -> list[dict[str, Any]]:
    return [{"kind": "X", "name": "x", "uid": uid, "controller": True}]


def pod(name: str = POD, index: str = "0", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "energy",
            "uid": f"uid-{name}",
            "labels": {"fleetsync.dev/run": "plants"},
            "annotations": {"batch.kubernetes.io/job-completion-index": index},
            "ownerReferences": owned_by("job-uid"),
        },
        "spec": {"serviceAccountName": "fleetsync-worker"},
    }
    body["metadata"].update(changes)
    return body


JOB = {"metadata": {"name": "plants", "namespace": "energy", "uid": "job-uid",
                    "ownerReferences": owned_by("u1")}}  # fmt: skip


def report(shard: Any = 0, **changes: Any) -> dict[str, Any]:
    body = {
        "run": "plants", "shard": shard, "pod": POD, "seq": 1, "state": "running",
        "shardTotal": 10, "seen": 10,
        "checkpoint": {"watermark": 3, "above": "", "counts": {"synced": 3}},
        "vendors": [], "failedSample": [], "wants": {},
        "cost": {"vendorCalls": 3, "sinkCalls": 1, "writeUnits": 3.0, "readUnits": 0.0,
                 "unprocessedItems": 0, "throttles": 0},
    }  # fmt: skip
    body.update(changes)
    return body


async def controller_with_run(cluster: Cluster, syncjob: dict[str, Any] = SYNCJOB) -> Controller:
    controller = Controller(
        cluster,  # type: ignore[arg-type]
        ControllerSettings(worker=WorkerSettings(image="x", report_url="http://c")),
    )
    controller.remember("SyncJob", "ADDED", syncjob)
    controller.remember("Job", "ADDED", JOB)
    state = await controller.syncjobs.run_state(KEY, syncjob)
    assert state is not None
    state.loaded = True
    return controller


async def post(
    controller: Controller, body: Any, *, token: str = f"pod:{POD}", raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    server = ReportServer(controller, controller.metrics)
    async with TestClient(TestServer(server.app())) as client:
        data = io.BytesIO(raw if raw is not None else json.dumps(body).encode())
        response = await client.post(
            "/v1/report", data=data, headers={"Authorization": f"Bearer {token}"}
        )
        return response.status, await response.json()


def untouched(controller: Controller, cluster: Cluster) -> bool:
    return not controller.runs[KEY].progress.views and cluster.writes == 0


async def test_the_runs_own_pod_is_heard() -> None:
    cluster = Cluster()
    controller = await controller_with_run(cluster)
    controller.remember("Pod", "ADDED", pod())
    status, reply = await post(controller, report())
    assert status == 200 and reply["stop"] is False
    assert controller.runs[KEY].progress.views[0].state == "running"


async def forged(
    the_pod: dict[str, Any], body: Any, *, account: str = "fleetsync-worker", job: Any = JOB
) -> tuple[int, str]:
    cluster = Cluster()
    cluster.account = account
    controller = await controller_with_run(cluster)
    controller.remember("Job", "MODIFIED", job)
    controller.remember("Pod", "ADDED", the_pod)
    status, reply = await post(controller, body, token=f"pod:{the_pod['metadata']['name']}")
    assert untouched(controller, cluster)
    return status, reply["error"]


async def test_a_pod_not_owned_by_the_runs_job_is_refused() -> None:
    status, error = await forged(pod(ownerReferences=owned_by("another-job")), report())
    assert status == 403 and "Job" in error
    status, _ = await forged(pod(ownerReferences=[]), report())
    assert status == 403


async def test_a_job_not_owned_by_the_syncjob_is_refused() -> None:
    impostor = {"metadata": {**JOB["metadata"], "ownerReferences": owned_by("someone")}}
    status, error = await forged(pod(), report(), job=impostor)
    assert status == 403 and "SyncJob" in error


async def test_another_service_account_is_refused() -> None:
    status, error = await forged(pod(), report(), account="default")
    assert status == 403 and "ServiceAccount" in error
    elsewhere = pod()
    elsewhere["spec"]["serviceAccountName"] = "default"
    assert (await forged(elsewhere, report()))[0] == 403


async def test_only_a_canonical_shard_in_range_that_is_the_pods_own() -> None:
    assert (await forged(pod(), report(shard="0")))[0] == 400  # a string is not a shard
    assert (await forged(pod(), report(shard=1)))[0] == 403  # another pod's shard
    assert (await forged(pod(), report(shard=-1)))[0] == 403
    for index in ("00", " 0", "+0", "0x0"):
        assert (await forged(pod(index=index), report()))[0] == 403, index
    assert (await forged(pod(index="2"), report(shard=2)))[0] == 403  # 2 shards: 0 and 1


async def test_another_runs_name_or_pod_name_is_refused() -> None:
    assert (await forged(pod(), report(run="other")))[0] == 403
    assert (await forged(pod(), report(pod="plants-1-xyz")))[0] == 403


async def test_malformed_bodies_get_400_naming_the_field() -> None:
    status, error = await forged(pod(), report(state="finished"))
    assert status == 400 and error.startswith("state:")
    status, error = await forged(pod(), report(checkpoint={"watermark": "3"}))
    assert status == 400 and error.startswith("checkpoint.")
    status, error = await forged(pod(), report(wants={"k": float("inf")}))
    assert status == 400 and "wants" in error
    # backlog: whole numbers of items, 0 or more, for keys the report wants (it steers how
    # the run's share of a key is divided among its shards)
    for backlog, field in (
        ({"k": -1}, "backlog.k: must be 0 or more"),
        ({"other": 5}, "backlog.other: not a key the report wants"),
        ({"k": 2.5}, "backlog.k"),
        ({"k": "7"}, "backlog.k"),
    ):
        status, error = await forged(pod(), report(wants={"k": 5.0}, backlog=backlog))
        assert status == 400 and error.startswith(field), (backlog, error)


async def test_an_oversized_body_gets_413() -> None:
    cluster = Cluster()
    controller = await controller_with_run(cluster)
    controller.remember("Pod", "ADDED", pod())
    status, _ = await post(controller, None, raw=b" " * (REPORT_MAX_BYTES + 1))
    assert status == 413 and untouched(controller, cluster)


async def test_wants_may_name_only_the_keys_of_the_runs_spec() -> None:
    limited = copy.deepcopy(SYNCJOB)
    limited["spec"]["source"]["rateLimit"] = {"requestsPerSecond": 5}
    cluster = Cluster()
    controller = await controller_with_run(cluster, limited)
    controller.remember("Pod", "ADDED", pod())
    status, _ = await post(controller, report(wants={"api.other.example": 5.0}))
    assert status == 403 and untouched(controller, cluster)
    status, reply = await post(controller, report(wants={"127.0.0.1:1": 5.0}))
    assert status == 200 and "127.0.0.1:1" in reply["grants"]


async def test_token_reviews_are_cached_in_a_bounded_ttl_cache() -> None:
    cluster = Cluster()
    controller = await controller_with_run(cluster)
    server = ReportServer(controller, controller.metrics)
    for i in range(50):
        await server.reviewer.review(f"pod:p{i}")
    small = type(server.reviewer)(controller, size=8)
    for i in range(50):
        await small.review(f"pod:p{i}")
    assert len(small._cache) == 8 and small._cache.ttl == 60.0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = sorted(report())


@st.composite
def bodies(draw: st.DrawFn) -> Any:
    """Random JSON, or a valid report with one field replaced by random JSON."""
    if draw(st.booleans()):
        return draw(JSON)
    body = report()
    body[draw(st.sampled_from(FIELDS))] = draw(JSON)
    return body


@settings(
    max_examples=150, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
@given(body=bodies())
def test_no_body_gets_a_5xx(body: Any) -> None:
    async def once() -> int:
        controller = await controller_with_run(Cluster())
        controller.remember("Pod", "ADDED", pod())
        status, _ = await post(controller, body)
        return status

    assert asyncio.run(once()) < 500
