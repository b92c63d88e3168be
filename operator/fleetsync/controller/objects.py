"""The Kubernetes objects the controller reads and writes, as typed dictionaries.

Bodies stay plain JSON dictionaries end to end (kopf hands them over as such; the client
reads them with ``_preload_content=False``; the pure builders return them and tests compare
them), but every one that crosses a module boundary has a type here, so mypy checks the field
names each room relies on. Only the fields fleetsync reads or writes are declared; the API
server's objects carry more, which is why every type is ``total=False`` and built from what
the API server sends (``cast`` at the edge: handlers.py and kube.py).

The shapes follow the Kubernetes API reference (core/v1 Pod, ConfigMap, Event; batch/v1 Job;
authentication/v1 TokenReview); field names are the API's own.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "ConfigMap",
    "ContainerStatus",
    "Event",
    "Job",
    "JobStatus",
    "KubeObject",
    "ObjectMeta",
    "OwnerReference",
    "Pod",
    "PodStatus",
    "SyncJobObject",
    "SyncScheduleObject",
    "TokenReview",
    "TokenReviewStatus",
    "TokenReviewUser",
]


class OwnerReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    generation: int
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[OwnerReference]
    creationTimestamp: str
    deletionTimestamp: str | None
    resourceVersion: str


class KubeObject(TypedDict, total=False):
    """Any object: what ``Kube.create`` takes and the watch cache keys by."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta


class JobStatus(TypedDict, total=False):
    active: int
    succeeded: int
    failed: int
    ready: int
    startTime: str
    completionTime: str
    conditions: list[dict[str, Any]]
    completedIndexes: str
    failedIndexes: str


class Job(KubeObject, total=False):
    spec: dict[str, Any]  # built by build.build_job; read back only for parallelism/suspend
    status: JobStatus


class ContainerStatus(TypedDict, total=False):
    name: str
    ready: bool
    restartCount: int
    state: dict[str, dict[str, Any]]  # waiting / running / terminated → their details
    lastState: dict[str, dict[str, Any]]


class PodStatus(TypedDict, total=False):
    phase: str
    reason: str
    message: str
    startTime: str
    podIP: str
    conditions: list[dict[str, Any]]
    containerStatuses: list[ContainerStatus]


class Pod(KubeObject, total=False):
    spec: dict[str, Any]
    status: PodStatus


class ConfigMap(KubeObject, total=False):
    data: dict[str, str]


class Event(KubeObject, total=False):
    type: str
    reason: str
    message: str
    count: int
    involvedObject: dict[str, Any]
    firstTimestamp: str
    lastTimestamp: str


class TokenReviewUser(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class TokenReviewStatus(TypedDict, total=False):
    authenticated: bool
    user: TokenReviewUser
    audiences: list[str]
    error: str


class TokenReview(KubeObject, total=False):
    spec: dict[str, Any]
    status: TokenReviewStatus


class SyncJobObject(KubeObject, total=False):
    """A SyncJob as the API server stores it; ``spec`` is validated into
    :class:`~fleetsync.api.v1alpha1.SyncJobSpec` before use, ``status`` is ours."""

    spec: dict[str, Any]
    status: dict[str, Any]


class SyncScheduleObject(KubeObject, total=False):
    spec: dict[str, Any]
    status: dict[str, Any]
