"""The "process kubelet": a node for the e2e control plane that runs pods as local processes.

There is no kubelet, no container runtime and no scheduler here. This component registers
one Ready Node, binds every pending pod to it, and runs each pod's first container as a
process: its command and args (the image is not run: the command must be on this machine,
e.g. the venv's `fleetsync`), env (values, fieldRef, secretKeyRef, configMapKeyRef, envFrom),
and volumes (configMap, secret, emptyDir, projected serviceAccountToken/configMap/secret/
downwardAPI) materialised under a directory per pod. Mount paths are mapped onto those
directories by prefix: an arg or env value that starts with a mount path is rewritten to the
local directory. Tokens come from the TokenRequest API bound to the pod, as the real kubelet
does, so TokenReview names the pod.

Like the real kubelet: a missing Secret/ConfigMap keeps the pod Pending with the container
waiting in CreateContainerConfigError naming it; exit codes land in containerStatuses (for
the Job controller's podFailurePolicy); a pod being deleted gets SIGTERM, then SIGKILL after
its grace period, and is then removed. One thread, polling every 0.2 s; bounded everywhere.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

NODE = "process-node"
API_TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConfigError(Exception):
    """A referenced Secret or ConfigMap (key) is missing: CreateContainerConfigError."""


class MountError(Exception):
    """A volume's Secret or ConfigMap is missing: the container stays ContainerCreating and
    a FailedMount event names it (what a real kubelet does for volumes)."""


@dataclass
class _Running:
    uid: str
    process: subprocess.Popen[bytes]
    started: str
    term_sent: float | None = None
    began: float = field(default_factory=time.monotonic)


@dataclass
class ProcessKubelet:
    server: str
    ca: Path
    cert: Path
    key: Path
    root: Path
    poll_seconds: float = 0.2
    running: dict[tuple[str, str], _Running] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)  # uids
    retry_at: dict[str, float] = field(default_factory=dict)  # uid -> when to try again
    _events_sent: set[tuple[str, str, str]] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        self.http = httpx.Client(base_url=self.server, verify=context, timeout=10, trust_env=False)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._register_node()
        self._thread = threading.Thread(target=self._loop, name="process-kubelet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        for running in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.process.wait(timeout=5)
        self.running.clear()
        self.http.close()

    def _register_node(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        }
        response = self.http.post("/api/v1/nodes", json=body)
        if response.status_code not in (201, 409):
            response.raise_for_status()
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "process kubelet is posting ready status",
                        "lastHeartbeatTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ],
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            }
        }
        self.http.patch(
            f"/api/v1/nodes/{NODE}/status",
            content=json.dumps(status),
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()

    def _heartbeat(self) -> None:
        """Renew the node's Lease (kube-node-lease), as the kubelet does every 10 s: with
        every default controller on, node-lifecycle would otherwise mark the node NotReady
        after ~40 s and evict its pods."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": NODE, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40, "renewTime": now},
        }
        url = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"
        response = self.http.put(url, json=lease)
        if response.status_code == 404:
            self.http.post(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", json=lease
            )
        elif response.status_code == 409:  # resourceVersion needed: read, then replace
            current = self.http.get(url).json()
            lease["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.http.put(url, json=lease)
        self._register_node()  # refreshes the Ready condition's heartbeat

    def _loop(self) -> None:
        last_beat = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_beat >= 10:
                    self._heartbeat()
                    last_beat = time.monotonic()
                self._sync()
            except Exception as error:  # keep the node alive; tests see errors in logs
                self.errors.append(f"{type(error).__name__}: {error}")
                del self.errors[:-50]
            self._stop.wait(self.poll_seconds)

    # --- the sync loop -------------------------------------------------------------------

    def _sync(self) -> None:
        pods = self.http.get("/api/v1/pods").raise_for_status().json()["items"]
        seen: set[tuple[str, str]] = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod["spec"]
            key = (meta["namespace"], meta["name"])
            seen.add(key)
            node = spec.get("nodeName")
            if node and node != NODE:
                continue
            if meta.get("deletionTimestamp"):
                self._terminate(pod)
                continue
            if not node:
                self._bind(pod)
                continue
            phase = (pod.get("status") or {}).get("phase")
            if key in self.running:
                self._check(pod, self.running[key])
            elif (
                meta["uid"] not in self.finished
                and phase not in ("Succeeded", "Failed")
                and time.monotonic() >= self.retry_at.get(meta["uid"], 0.0)
            ):
                self._start(pod)
        for key in list(self.running):
            if key not in seen:  # deleted without us noticing the grace period
                running = self.running.pop(key)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    running.process.wait(timeout=5)

    def _bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
        }
        self.http.post(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", json=binding
        )

    def _status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        response = self.http.patch(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
            content=json.dumps({"status": status}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if response.status_code not in (200, 404):
            response.raise_for_status()

    # --- references ----------------------------------------------------------------------

    def _get(self, namespace: str, kind: str, name: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/namespaces/{namespace}/{kind}/{name}")
        if response.status_code == 404:
            singular = {"secrets": "secret", "configmaps": "configmap"}[kind]
            raise ConfigError(f'{singular} "{name}" not found')
        data: dict[str, Any] = response.raise_for_status().json()
        return data

    def _data(self, namespace: str, kind: str, name: str) -> dict[str, bytes]:
        obj = self._get(namespace, kind, name)
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        out = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out

    def _key(self, namespace: str, kind: str, ref: dict[str, Any]) -> bytes | None:
        try:
            data = self._data(namespace, kind, ref["name"])
        except ConfigError:
            if ref.get("optional"):
                return None
            raise
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            singular = {"secrets": "secret", "configmaps": "configmap"}[kind]
            raise ConfigError(f"couldn't find key {ref['key']} in {singular} {ref['name']}")
        return data[ref["key"]]

    def _field(self, pod: dict[str, Any], path: str) -> str:
        meta = pod["metadata"]
        if path.startswith("metadata.annotations['"):
            return str((meta.get("annotations") or {}).get(path[22:-2], ""))
        if path.startswith("metadata.labels['"):
            return str((meta.get("labels") or {}).get(path[17:-2], ""))
        return str(
            {
                "metadata.name": meta["name"],
                "metadata.namespace": meta["namespace"],
                "metadata.uid": meta["uid"],
                "spec.nodeName": NODE,
                "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
                "status.podIP": "127.0.0.1",
                "status.hostIP": "127.0.0.1",
            }.get(path, "")
        )

    def _token(self, pod: dict[str, Any], audience: str | None, seconds: int) -> bytes:
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": max(seconds, 600),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        response = self.http.post(
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token",
            json=request,
        )
        if response.status_code == 404:
            raise ConfigError(f'serviceaccount "{account}" not found')
        return str(response.raise_for_status().json()["status"]["token"]).encode()

    # --- starting a pod ------------------------------------------------------------------

    def _volumes(self, pod: dict[str, Any], base: Path) -> dict[str, Path]:
        namespace = pod["metadata"]["namespace"]
        dirs: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            target = base / "volumes" / volume["name"]
            target.mkdir(parents=True, exist_ok=True)
            files: dict[str, bytes] = {}
            if "configMap" in volume:
                source = volume["configMap"]
                files = self._data(namespace, "configmaps", source["name"])
                files = self._select(files, source.get("items"))
            elif "secret" in volume:
                source = volume["secret"]
                files = self._data(namespace, "secrets", source["secretName"])
                files = self._select(files, source.get("items"))
            elif "projected" in volume:
                for src in volume["projected"].get("sources") or []:
                    if "serviceAccountToken" in src:
                        sat = src["serviceAccountToken"]
                        files[sat["path"]] = self._token(
                            pod, sat.get("audience"), int(sat.get("expirationSeconds", 3600))
                        )
                    elif "configMap" in src:
                        data = self._data(namespace, "configmaps", src["configMap"]["name"])
                        files.update(self._select(data, src["configMap"].get("items")))
                    elif "secret" in src:
                        data = self._data(namespace, "secrets", src["secret"]["name"])
                        files.update(self._select(data, src["secret"].get("items")))
                    elif "downwardAPI" in src:
                        for entry in src["downwardAPI"].get("items") or []:
                            path = entry["fieldRef"]["fieldPath"]
                            files[entry["path"]] = self._field(pod, path).encode()
            elif "emptyDir" not in volume:
                raise ConfigError(f"volume {volume['name']}: type not supported by this node")
            for name, content in files.items():
                path = target / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            dirs[volume["name"]] = target
        return dirs

    def _in_cluster_kubeconfig(self, volume: Path, base: Path) -> Path:
        """The stand-in for in-cluster config: a real kubelet mounts the API token at
        /var/run/secrets/kubernetes.io/serviceaccount and sets KUBERNETES_SERVICE_HOST; a
        process cannot see that fixed path, so it gets a kubeconfig naming the same token and
        CA (client libraries fall back to KUBECONFIG when not in a cluster)."""
        path = base / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "in-cluster",
                            "cluster": {
                                "server": self.server,
                                "certificate-authority-data": base64.b64encode(
                                    (volume / "ca.crt").read_bytes()
                                ).decode(),
                            },
                        }
                    ],
                    "users": [{"name": "pod", "user": {"token": (volume / "token").read_text()}}],
                    "contexts": [
                        {"name": "pod", "context": {"cluster": "in-cluster", "user": "pod"}}
                    ],
                    "current-context": "pod",
                }
            )
        )
        path.chmod(0o600)
        return path

    @staticmethod
    def _select(data: dict[str, bytes], items: list[dict[str, str]] | None) -> dict[str, bytes]:
        if not items:
            return data
        return {item["path"]: data[item["key"]] for item in items if item["key"] in data}

    def _image_env(self, pod: dict[str, Any]) -> dict[str, str]:
        """The image's ENV (Dockerfile): its `fleetsync` is the venv's; output unbuffered.
        Host paths: never mapped into the pod's mounts (a clone under /tmp has its venv
        there, and the pod mounts an emptyDir at /tmp)."""
        return {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYTHONUNBUFFERED": "1",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "HOSTNAME": pod["metadata"]["name"],
        }

    def _env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        """The container's env as its spec gives it (values, field refs, Secrets, ConfigMaps)."""
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self._data(namespace, "configmaps", source["configMapRef"]["name"])
            else:
                data = self._data(namespace, "secrets", source["secretRef"]["name"])
            env.update({prefix + k: v.decode() for k, v in data.items()})
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
                continue
            source = var.get("valueFrom") or {}
            value: bytes | str | None = None
            if "fieldRef" in source:
                value = self._field(pod, source["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in source:
                value = self._key(namespace, "secrets", source["secretKeyRef"])
            elif "configMapKeyRef" in source:
                value = self._key(namespace, "configmaps", source["configMapKeyRef"])
            if value is not None:
                env[var["name"]] = value.decode() if isinstance(value, bytes) else value
        return env

    def _start(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        key = (meta["namespace"], meta["name"])
        container = spec["containers"][0]
        base = self.root / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        try:
            try:
                volumes = self._volumes(pod, base)
            except ConfigError as error:
                raise MountError(str(error)) from None
            env = self._env(pod, container)
        except MountError as error:
            self.retry_at[meta["uid"]] = time.monotonic() + 2.0
            self._waiting(pod, container, "ContainerCreating", "")
            self._event(pod, "FailedMount", f"MountVolume.SetUp failed: {error}")
            return
        except ConfigError as error:
            self.retry_at[meta["uid"]] = time.monotonic() + 1.0  # as the kubelet's backoff
            self._status(
                pod,
                {
                    "phase": "Pending",
                    "conditions": [{"type": "PodScheduled", "status": "True"}],
                    "containerStatuses": [
                        {
                            "name": container["name"],
                            "image": container.get("image", ""),
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {
                                "waiting": {
                                    "reason": "CreateContainerConfigError",
                                    "message": str(error),
                                }
                            },
                        }
                    ],
                },
            )
            return
        # The container's view: a per-pod root where each mount path is a link to its volume.
        # An absolute path in args/env that is, contains or lies under a mount path is
        # mapped into that root (e.g. --secrets-dir=/var/run/secrets/x above mounted
        # /var/run/secrets/x/<name> directories).
        root = base / "root"
        mount_paths = []
        for mount in container.get("volumeMounts") or []:
            path = mount["mountPath"].rstrip("/")
            link = root / path.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(volumes[mount["name"]], target_is_directory=True)
            mount_paths.append(path)

        def local(value: str) -> str:
            # A path that exists on this machine is the host's (the venv's fleetsync under
            # /tmp must not be mapped into an emptyDir mounted at /tmp).
            if not value.startswith("/") or os.path.exists(value):
                return value
            v = value.rstrip("/")
            for m in mount_paths:
                if v == m or v.startswith(m + "/") or m.startswith(v + "/"):
                    return str(root) + value
            return value

        # No container runtime: an image's ENTRYPOINT is "the installed fleetsync command"
        # (the Dockerfile's), so the chart's pod specs run unchanged here.
        command = container.get("command") or [str(Path(sys.executable).parent / "fleetsync")]
        argv = [local(a) for a in [*command, *(container.get("args") or [])]]
        env = {**self._image_env(pod), **{k: local(v) for k, v in env.items()}}
        for mount in container.get("volumeMounts") or []:
            if mount["mountPath"].rstrip("/") == API_TOKEN_MOUNT:
                env["KUBECONFIG"] = str(self._in_cluster_kubeconfig(volumes[mount["name"]], base))
        log = base / "log"
        base.mkdir(parents=True, exist_ok=True)
        workdir = base / "work"
        workdir.mkdir(exist_ok=True)
        try:
            with log.open("ab") as out:
                process = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                    start_new_session=True,
                )  # fmt: skip
        except OSError as error:
            self._finish(pod, 128, "StartError", str(error))
            return
        started = _now()
        self.running[key] = _Running(meta["uid"], process, started)
        self._status(
            pod,
            {
                "phase": "Running",
                "startTime": started,
                "podIP": "127.0.0.1",
                "hostIP": "127.0.0.1",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Initialized", "status": "True"},
                    {"type": "ContainersReady", "status": "True"},
                    {"type": "Ready", "status": "True"},
                ],
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container.get("image", ""),
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            },
        )

    def _waiting(
        self, pod: dict[str, Any], container: dict[str, Any], reason: str, message: str
    ) -> None:
        state: dict[str, str] = {"reason": reason}
        if message:
            state["message"] = message
        self._status(
            pod,
            {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container.get("image", ""),
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": state},
                    }
                ],
            },
        )

    def _event(self, pod: dict[str, Any], reason: str, message: str) -> None:
        meta = pod["metadata"]
        key = (meta["uid"], reason, message)
        if key in self._events_sent:
            return
        self._events_sent.add(key)
        self.http.post(
            f"/api/v1/namespaces/{meta['namespace']}/events",
            json={
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": meta["name"] + ".", "namespace": meta["namespace"]},
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                },
                "reason": reason,
                "message": message,
                "type": "Warning",
                "source": {"component": "kubelet", "host": NODE},
                "firstTimestamp": _now(),
                "lastTimestamp": _now(),
                "count": 1,
            },
        )

    def _check(self, pod: dict[str, Any], running: _Running) -> None:
        code = running.process.poll()
        if code is None:
            deadline = pod["spec"].get("activeDeadlineSeconds")
            if deadline is not None and time.monotonic() - running.began > float(deadline):
                # As the kubelet does: kill the pod, phase Failed, reason DeadlineExceeded.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.process.pid, signal.SIGKILL)
                running.process.wait(timeout=10)
                key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
                self.running.pop(key, None)
                self._finish(pod, 137, "DeadlineExceeded", "pod activeDeadlineSeconds passed")
            return
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        self.running.pop(key, None)
        if code < 0:  # killed by a signal: report it as the runtime does (128 + n)
            code = 128 - code
        self._finish(pod, code, "Completed" if code == 0 else "Error", "", running.started)

    def _finish(
        self, pod: dict[str, Any], code: int, reason: str, message: str, started: str | None = None
    ) -> None:
        container = pod["spec"]["containers"][0]
        self.finished.add(pod["metadata"]["uid"])
        self._status(
            pod,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "PodCompleted"},
                    {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"},
                ],
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container.get("image", ""),
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": reason,
                                "message": message,
                                "startedAt": started or _now(),
                                "finishedAt": _now(),
                            }
                        },
                    }
                ],
            },
        )

    def _terminate(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        running = self.running.get(key)
        if running is not None:
            code = running.process.poll()
            if code is None:
                grace = min(float(pod["spec"].get("terminationGracePeriodSeconds", 30)), 60.0)
                if running.term_sent is None:
                    running.term_sent = time.monotonic()
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(running.process.pid, signal.SIGTERM)
                    return
                if time.monotonic() - running.term_sent < grace:
                    return
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.process.pid, signal.SIGKILL)
                running.process.wait(timeout=10)
                code = running.process.returncode
            self.running.pop(key, None)
            if code < 0:
                code = 128 - code
            self._finish(pod, code, "Completed" if code == 0 else "Error", "", running.started)
        # Gone from this node: remove the object (finalizers, e.g. the Job controller's, keep
        # it until their owners have accounted for it).
        self.http.delete(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
            params={"gracePeriodSeconds": "0"},
        )
        base_dirs = list(self.root.glob(f"{meta['namespace']}_{meta['name']}_*"))
        for d in base_dirs:
            shutil.rmtree(d / "volumes", ignore_errors=True)
