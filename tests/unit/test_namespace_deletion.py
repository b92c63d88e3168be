"""A run whose namespace is being deleted is released, not resumed.

The e2e suite shows the whole story on the real control plane
(test_deleting_a_namespace_with_a_running_syncjob_completes); here, the decisions alone, with
the Kubernetes API replaced by a recording stand-in.
"""

from __future__ import annotations

import json
from typing import Any

from conftest import SYNCJOB, SYNCJOB_KEY, controller_knowing_syncjob
from kubernetes_asyncio.client.exceptions import ApiException

from fleetsync.controller.kube import is_namespace_terminating
from fleetsync.controller.runtime import Controller

KEY = SYNCJOB_KEY
# What the API server's NamespaceLifecycle admission answers (captured from kube-apiserver
# v1.36.3 by the e2e suite).
TERMINATING = {
    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
    "message": 'configmaps "plants-progress" is forbidden: unable to create new content in '
    "namespace energy because it is being terminated",
    "reason": "Forbidden",
    "details": {"name": "plants-progress", "kind": "configmaps", "causes": [
        {"reason": "NamespaceTerminating", "message": "namespace energy is being terminated",
         "field": "metadata.namespace"}]},
    "code": 403,
}  # fmt: skip


def api_error(status: int, body: dict[str, Any]) -> ApiException:
    error = ApiException(status=status, reason="Forbidden")
    error.body = json.dumps(body)
    return error


def test_only_the_namespace_lifecycle_refusal_counts_as_terminating() -> None:
    assert is_namespace_terminating(api_error(403, TERMINATING))
    rbac = {**TERMINATING, "details": {"name": "plants-progress", "kind": "configmaps"}}
    assert not is_namespace_terminating(api_error(403, rbac))  # a missing RBAC rule
    assert not is_namespace_terminating(api_error(409, TERMINATING))
    assert not is_namespace_terminating(ValueError("not an API error"))


class Cluster:
    def __init__(self, terminating: bool) -> None:
        self.terminating = terminating
        self.probes = 0
        self.deleted: list[tuple[str, str]] = []
        self.created: list[str] = []

    async def namespace_terminating(self, namespace: str) -> bool:
        self.probes += 1
        return self.terminating

    async def delete_job(self, namespace: str, name: str) -> None:
        self.deleted.append((namespace, name))

    async def read_config_map(self, namespace: str, name: str) -> None:
        return None

    async def create(self, body: dict[str, Any]) -> bool:
        if self.terminating:
            raise api_error(403, TERMINATING)
        self.created.append(body["kind"])
        return True


def controller(cluster: Cluster) -> Controller:
    c = controller_knowing_syncjob(cluster)
    c.cache.jobs[KEY] = {"metadata": {"name": "plants", "namespace": "energy"}}
    return c


def pod(deleting: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "plants-0-x",
        "namespace": "energy",
        "labels": {"fleetsync.dev/run": "plants"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-24T20:00:00Z"
    return {"metadata": meta, "status": {}}


async def test_a_pod_being_deleted_in_a_terminating_namespace_releases_the_job() -> None:
    cluster = Cluster(terminating=True)
    c = controller(cluster)
    c.remember("Pod", "ADDED", pod(deleting=True))
    await c.reconcile_syncjob(KEY)
    assert cluster.deleted == [KEY]
    assert c.namespaces.terminating.keys() == {"energy"}
    # Known now: no new probe, no Job or ConfigMap recreated.
    del c.cache.jobs[KEY]
    await c.reconcile_syncjob(KEY)
    assert cluster.probes == 1 and cluster.created == []


async def test_an_evicted_pod_in_a_live_namespace_keeps_the_job() -> None:
    cluster = Cluster(terminating=False)
    c = controller(cluster)
    pods = [pod(deleting=True)]
    assert not await c.namespaces.release(KEY, c.cache.jobs[KEY], pods, now=100.0)
    assert not await c.namespaces.release(KEY, c.cache.jobs[KEY], pods, now=101.0)  # throttled
    assert cluster.deleted == [] and cluster.probes == 1


async def test_no_pod_being_deleted_means_no_probe() -> None:
    cluster = Cluster(terminating=True)
    c = controller(cluster)
    await c.syncjobs.run_state(KEY, SYNCJOB)
    assert not await c.namespaces.release(KEY, c.cache.jobs[KEY], [pod(deleting=False)], now=100.0)
    assert cluster.probes == 0
