"""``fleetsync retry-failed SYNCJOB`` in a cluster: a new SyncJob over a run's dead letters.

The dead letters live in the sink, so they are read from there (with the same Secret
references, resolved from ``--secrets-dir`` or the environment, as a worker would). Their
items go into a ConfigMap that the new SyncJob's inventory references (never inline: there
may be more than 1,000); both are named after the original run, ``<run>-retry-<n>``. The
new SyncJob owns the ConfigMap, so deleting it cleans up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from fleetsync.api.constants import API_VERSION, GROUP, VERSION
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.controller.build import owner_reference
from fleetsync.controller.kube import ApiException, Kube, connect
from fleetsync.controller.objects import ConfigMap, SyncJobObject
from fleetsync.worker.secrets import SecretResolver
from fleetsync.worker.sinkfactory import build_sink

__all__ = ["retry_failed_in_cluster"]

ITEMS_KEY = "items.jsonl"


async def retry_failed_in_cluster(
    name: str, namespace: str, *, kubeconfig: str | None, secrets_dir: str | None
) -> str | None:
    """Create the retry SyncJob; its name, or None when the run has no dead letters."""
    kube = Kube(await connect(kubeconfig))
    try:
        original: dict[str, Any] = await kube.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "syncjobs", name
        )
        spec = SyncJobSpec.model_validate(original["spec"])
        sink = build_sink(spec, secrets=SecretResolver(secrets_dir), base_dir=Path.cwd())
        await sink.open()
        try:
            letters = await sink.read_dead_letters(name)
        finally:
            await sink.close()
        if not letters:
            return None
        retry = await _free_name(kube, namespace, name)
        body = original["spec"]
        body["fleet"]["inventory"] = {"configMapRef": {"name": retry, "key": ITEMS_KEY}}
        body.pop("suspend", None)
        created: dict[str, Any] = await kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "syncjobs",
            {
                "apiVersion": API_VERSION,
                "kind": "SyncJob",
                "metadata": {
                    "name": retry,
                    "namespace": namespace,
                    "labels": {f"{GROUP}/retry-of": name},
                },
                "spec": body,
            },
        )  # fmt: skip
        letters_map: ConfigMap = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": retry,
                    "namespace": namespace,
                    "ownerReferences": [owner_reference(cast(SyncJobObject, created))],
                },
                "data": {ITEMS_KEY: "".join(json.dumps(dict(le.item)) + "\n" for le in letters)},
            }  # fmt: skip
        await kube.create(letters_map)
        return retry
    finally:
        await kube.close()


async def _free_name(kube: Kube, namespace: str, name: str) -> str:
    for n in range(1, 1000):
        candidate = f"{name[:50]}-retry-{n}"
        try:
            await kube.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "syncjobs", candidate
            )
        except ApiException as error:
            if error.status == 404:
                return candidate
            raise
    raise RuntimeError(f"no free retry name for {name}")
