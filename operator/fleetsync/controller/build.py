"""Pure builders of the objects a SyncJob owns: its config ConfigMap and its Indexed Job.

Everything here is a function of the SyncJob and the controller's settings, so it is
unit-tested without a cluster and a reconcile is "build, then make the API match".
The Job is named after the SyncJob (fixed name: a retried create can never duplicate it);
Secrets are mounted by reference, never copied; the pod runs under the restricted Pod
Security Standard and needs no Kubernetes RBAC: it reports progress to the controller over
HTTP with a projected service-account token of fleetsync's own audience.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from fleetsync.api.constants import API_VERSION, GROUP, ExitCode
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.controller.objects import (
    ConfigMap,
    Job,
    KubeObject,
    OwnerReference,
    SyncJobObject,
)
from fleetsync.controller.plan import RunPlan

__all__ = [
    "CONFIG_MOUNT",
    "INVENTORY_MOUNT",
    "LABEL_RUN",
    "LABEL_SCHEDULE",
    "MANAGED_BY",
    "SECRETS_MOUNT",
    "TOKEN_AUDIENCE",
    "TOKEN_MOUNT",
    "WorkerSettings",
    "build_config_map",
    "build_job",
    "config_map_name",
    "owner_reference",
    "progress_config_map_name",
    "run_labels",
    "secret_names",
    "worker_service_account",
]

Body = SyncJobObject

LABEL_RUN = f"{GROUP}/run"
LABEL_SCHEDULE = f"{GROUP}/schedule"
MANAGED_BY = {"app.kubernetes.io/managed-by": "fleetsync", "app.kubernetes.io/name": "fleetsync"}
TOKEN_AUDIENCE = GROUP
CONFIG_MOUNT = "/etc/fleetsync/run"
INVENTORY_MOUNT = "/etc/fleetsync/inventory"
SECRETS_MOUNT = "/var/run/secrets/fleetsync/secrets"
TOKEN_MOUNT = "/var/run/secrets/fleetsync/token"
CONTAINER = "worker"
NON_ROOT_UID = 65532
# A pod's replacement must not be retried forever when something outside fleetsync breaks.
BACKOFF_LIMIT_PER_INDEX = 3
WORKER_METRICS_PORT = 9090


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What the controller knows that the SyncJob does not say."""

    image: str
    report_url: str  # where workers POST progress (the controller's Service)
    command: tuple[str, ...] = ("fleetsync",)
    service_account: str = "fleetsync-worker"
    token_seconds: int = 3600
    image_pull_policy: str = "IfNotPresent"


def config_map_name(run: str) -> str:
    return f"{run}-config"


def progress_config_map_name(run: str) -> str:
    return f"{run}-progress"


def run_labels(run: str, schedule: str | None = None) -> dict[str, str]:
    labels = {**MANAGED_BY, LABEL_RUN: run}
    if schedule:
        labels[LABEL_SCHEDULE] = schedule
    return labels


def owner_reference(syncjob: KubeObject) -> OwnerReference:
    meta = syncjob["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "SyncJob",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def worker_service_account(spec: SyncJobSpec, settings: WorkerSettings) -> str:
    """The ServiceAccount a run's shard pods run under (and report as)."""
    worker = spec.worker
    return (
        worker.service_account_name
        if worker and worker.service_account_name
        else settings.service_account
    )


def secret_names(spec: SyncJobSpec) -> list[str]:
    """Every Secret the workers read, to be mounted (by reference) into the pod."""
    names: set[str] = set()
    auth = spec.source.http.auth
    if auth is not None and auth.secret_ref is not None:
        names.add(auth.secret_ref.name)
    if auth is not None and auth.oauth2 is not None:
        names.add(auth.oauth2.client_id_ref.name)
        names.add(auth.oauth2.client_secret_ref.name)
    sink = spec.resolved_sink
    if sink.postgres is not None:
        names.add(sink.postgres.dsn_secret_ref.name)
    if sink.dynamodb is not None and sink.dynamodb.credentials_secret_ref is not None:
        names.add(sink.dynamodb.credentials_secret_ref.name)
    return sorted(names)


def build_config_map(syncjob: Body, spec: SyncJobSpec) -> ConfigMap:
    """The run's config: the SyncJob itself (spec only), far below 1 MiB by construction
    (inline inventories are capped at 1,000 items; larger fleets are referenced)."""
    meta = syncjob["metadata"]
    manifest = {
        "apiVersion": API_VERSION,
        "kind": "SyncJob",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": run_labels(meta["name"]),
            "ownerReferences": [owner_reference(syncjob)],
        },
        "data": {"syncjob.yaml": yaml.safe_dump(manifest, sort_keys=False)},
    }


def _volumes(run: str, spec: SyncJobSpec, settings: WorkerSettings) -> tuple[list[Any], list[Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map_name(run)}},
        {
            "name": "report-token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": TOKEN_AUDIENCE,
                            "expirationSeconds": settings.token_seconds,
                            "path": "token",
                        }
                    }
                ]
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        {"name": "report-token", "mountPath": TOKEN_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    ref = spec.fleet.inventory.config_map_ref
    if ref is not None:
        volumes.append({"name": "inventory", "configMap": {"name": ref.name}})
        mounts.append({"name": "inventory", "mountPath": INVENTORY_MOUNT, "readOnly": True})
    for i, name in enumerate(secret_names(spec)):
        volumes.append({"name": f"secret-{i}", "secret": {"secretName": name}})
        mounts.append(
            {"name": f"secret-{i}", "mountPath": f"{SECRETS_MOUNT}/{name}", "readOnly": True}
        )
    return volumes, mounts


def build_job(syncjob: Body, spec: SyncJobSpec, plan: RunPlan, settings: WorkerSettings) -> Job:
    """The run's Indexed Job: one completion index per shard."""
    meta = syncjob["metadata"]
    run, namespace = meta["name"], meta["namespace"]
    schedule = (meta.get("labels") or {}).get(LABEL_SCHEDULE)
    worker = spec.worker
    volumes, mounts = _volumes(run, spec, settings)
    # Flags and values as separate arguments: paths stay whole words (the e2e suite's
    # process kubelet maps mount paths onto local directories by prefix).
    args = [
        "worker",
        "--manifest",
        f"{CONFIG_MOUNT}/syncjob.yaml",
        "--shards",
        str(plan.shards),
        "--run",
        run,
        "--coordinator",
        settings.report_url,
        "--token-file",
        f"{TOKEN_MOUNT}/token",
        "--secrets-dir",
        SECRETS_MOUNT,
    ]
    if spec.fleet.inventory.config_map_ref is not None:
        args += ["--config-map-dir", INVENTORY_MOUNT]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": (worker.image if worker and worker.image else settings.image),
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(settings.command),
        "args": args,
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "FLEETSYNC_RUN", "value": run},
            # Metric label: the schedule (or this SyncJob), never the run's own name.
            {"name": "FLEETSYNC_OWNER", "value": schedule or run},
            {"name": "FLEETSYNC_METRICS_PORT", "value": str(WORKER_METRICS_PORT)},
        ],
        "ports": [{"name": "metrics", "containerPort": WORKER_METRICS_PORT}],
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if worker and worker.resources:
        container["resources"] = worker.resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": worker_service_account(spec, settings),
        # The API token is not needed: progress goes to the controller over HTTP with the
        # projected token of fleetsync's own audience, which the API server does not accept.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
            "runAsGroup": NON_ROOT_UID,
            "fsGroup": NON_ROOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": volumes,
    }
    if worker:
        for field, value in (
            ("nodeSelector", worker.node_selector),
            ("tolerations", worker.tolerations),
            ("affinity", worker.affinity),
            ("priorityClassName", worker.priority_class_name),
        ):
            if value:
                pod_spec[field] = value
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": plan.shards,
        "parallelism": plan.parallelism,
        "suspend": spec.suspend,
        "backoffLimitPerIndex": BACKOFF_LIMIT_PER_INDEX,
        "podFailurePolicy": {
            "rules": [
                # Invalid config: every retry would fail the same way.
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": [int(ExitCode.INVALID_CONFIG)],
                    },
                },
                # SIGTERM with the checkpoint saved: a replacement resumes; not a failure.
                {
                    "action": "Ignore",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": [int(ExitCode.INTERRUPTED)],
                    },
                },
                # Evictions, preemption, node drains.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": {
            "metadata": {"labels": run_labels(run, schedule)},
            "spec": pod_spec,
        },
    }
    if spec.deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": run,
            "namespace": namespace,
            "labels": run_labels(run, schedule),
            "ownerReferences": [owner_reference(syncjob)],
        },
        "spec": job_spec,
    }
