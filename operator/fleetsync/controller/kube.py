"""The few Kubernetes API calls the controller makes, over kubernetes_asyncio.

Reads come from kopf's watch streams (see handlers.py), so this module only writes — and
reads the odd object the watches cannot have yet. Objects stay plain dicts end to end
(``_preload_content=False`` on reads), the shapes the pure builders produce and tests
compare. 409 on create means "already there": creates are idempotent by fixed names.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any, cast

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from fleetsync.api.constants import GROUP, VERSION
from fleetsync.controller.objects import ConfigMap, Event, KubeObject, Pod, TokenReview

__all__ = ["ApiException", "Kube", "connect", "credentials", "is_namespace_terminating"]

MERGE = "application/merge-patch+json"


def is_namespace_terminating(error: BaseException) -> bool:
    """A 403 from the NamespaceLifecycle admission plugin: the namespace is being deleted."""
    if not isinstance(error, ApiException) or error.status != 403:
        return False
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return False
    causes = (body.get("details") or {}).get("causes") or []
    # StatusCause.Type is serialised as "reason".
    return any(cause.get("reason") == "NamespaceTerminating" for cause in causes)


async def connect(kubeconfig: str | None) -> client.ApiClient:
    """In a pod: the mounted service-account token; elsewhere: a kubeconfig (``KUBECONFIG``)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return client.ApiClient(configuration)


def credentials(configuration: client.Configuration) -> dict[str, Any]:
    """What kopf's watches log in with, taken from the one configuration ``connect`` loaded,
    so the watches and the writes always reach the same cluster as the same identity (kopf's
    own kubeconfig login reads only ``KUBECONFIG``, never ``--kubeconfig``, and no exec
    plugins). In a pod the token file is read again first: bound tokens rotate, and kopf
    calls its login again when the API server answers 401."""
    refresh = getattr(configuration, "refresh_api_key_hook", None)
    if refresh is not None:
        refresh(configuration)
    token = (configuration.api_key or {}).get("BearerToken") or None
    if token is not None and token.lower().startswith("bearer "):
        token = token[len("bearer ") :]
    return {
        "server": configuration.host,
        "ca_path": configuration.ssl_ca_cert or None,
        "insecure": not configuration.verify_ssl,
        "token": token,
        "certificate_path": configuration.cert_file or None,
        "private_key_path": configuration.key_file or None,
        "username": configuration.username or None,
        "password": configuration.password or None,
    }


async def _json(response: Any) -> dict[str, Any] | None:
    """The body of a raw response (``_preload_content=False`` skips the client's own status
    check): None for 404, ApiException for any other error."""
    try:
        if response.status == 404:
            return None
        if response.status >= 400:
            raise ApiException(status=response.status, reason=await response.text())
        data: dict[str, Any] = json.loads(await response.read())
        return data
    finally:
        response.release()


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.authn = client.AuthenticationV1Api(api)

    async def close(self) -> None:
        await self.api.close()

    # --- create, idempotently ----------------------------------------------------------------

    async def create(self, body: KubeObject) -> bool:
        """Create ``body``; False if an object of that name exists already."""
        namespace = body["metadata"]["namespace"]
        kind = body["kind"]
        try:
            if kind == "ConfigMap":
                await self.core.create_namespaced_config_map(namespace, body)
            elif kind == "Job":
                await self.batch.create_namespaced_job(namespace, body)
            elif kind == "SyncJob":
                await self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "syncjobs", body
                )
            else:  # pragma: no cover - programming error
                raise ValueError(f"cannot create {kind}")
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    # --- reads -----------------------------------------------------------------------------

    async def read_config_map(self, namespace: str, name: str) -> ConfigMap | None:
        response = await self.core.read_namespaced_config_map(
            name, namespace, _preload_content=False
        )
        return cast(ConfigMap | None, await _json(response))

    async def read_pod(self, namespace: str, name: str) -> Pod | None:
        response = await self.core.read_namespaced_pod(name, namespace, _preload_content=False)
        return cast(Pod | None, await _json(response))

    async def warning_events(self, namespace: str, uid: str) -> list[Event]:
        response = await self.core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.uid={uid},type=Warning",
            _preload_content=False,
        )
        items: list[Event] = (await _json(response) or {}).get("items") or []
        return items

    # --- patches ---------------------------------------------------------------------------

    async def patch_syncjob_status(self, namespace: str, name: str, status: Any) -> None:
        await self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "syncjobs", name, {"status": status}, _content_type=MERGE
        )

    async def patch_schedule_status(self, namespace: str, name: str, status: Any) -> None:
        await self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "syncschedules",
            name,
            {"status": status},
            _content_type=MERGE,
        )

    async def patch_job(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        await self.batch.patch_namespaced_job(name, namespace, {"spec": spec}, _content_type=MERGE)

    async def replace_config_map_data(
        self, namespace: str, name: str, data: Mapping[str, str]
    ) -> None:
        await self.core.patch_namespaced_config_map(
            name, namespace, {"data": dict(data)}, _content_type=MERGE
        )

    # --- deletes ---------------------------------------------------------------------------

    async def namespace_terminating(self, namespace: str) -> bool:
        """Whether ``namespace`` is being deleted: the API server refuses new objects in it.
        Probed with a dry-run create of a ConfigMap (the controller may create ConfigMaps
        already; reading the Namespace would need a cluster-scoped grant)."""
        probe = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"generateName": "fleetsync-probe-", "namespace": namespace},
        }
        try:
            await self.core.create_namespaced_config_map(namespace, probe, dry_run="All")
        except ApiException as error:
            if is_namespace_terminating(error):
                return True
            raise
        return False

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a run's Job; its pods go with it (background propagation)."""
        try:
            await self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise

    async def delete_syncjob(self, namespace: str, name: str) -> None:
        try:
            await self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, "syncjobs", name, propagation_policy="Background"
            )
        except ApiException as error:
            if error.status != 404:
                raise

    # --- authentication and events ---------------------------------------------------------

    async def token_review(self, token: str, audience: str) -> TokenReview:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        }
        response = await self.authn.create_token_review(body, _preload_content=False)
        return cast(TokenReview, await _json(response) or {})

    async def event(
        self, involved: KubeObject, kind: str, reason: str, message: str, *, warning: bool
    ) -> None:
        meta = involved["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": kind,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "fleetsync-controller"},
            "reportingComponent": "fleetsync.dev/controller",
            "reportingInstance": "fleetsync-controller",
        }
        # Events are best effort, as in Kubernetes' own controllers.
        with contextlib.suppress(ApiException):
            await self.core.create_namespaced_event(meta["namespace"], body)
