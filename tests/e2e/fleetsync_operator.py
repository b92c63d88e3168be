"""Run the fleetsync controller against the e2e control plane the way the chart runs it:
CRDs applied, RBAC rendered from charts/fleetsync by helm, and the controller a separate
process authenticating as its own ServiceAccount (never as admin).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FLEETSYNC = str(BIN / "fleetsync")
RELEASE = "fleetsync"
SYSTEM_NS = "fleetsync-system"
KUBE_VERSION = "1.36.3"  # tests/e2e/controlplane/go.mod
CONTROLLER_SA = "fleetsync-controller"


class Cluster(Protocol):
    kubeconfig: Path

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def helm() -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "tests/tools/helm.sh")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def render_chart(
    *args: str, release: str = RELEASE, namespace: str = SYSTEM_NS
) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            helm(),
            "template",
            release,
            str(ROOT / "charts/fleetsync"),
            "--namespace",
            namespace,
            "--kube-version",
            KUBE_VERSION,
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def wait_for(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.5, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def get_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    out = cluster.kubectl("get", *args, "-o", "json")
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def apply(cluster: Cluster, documents: list[dict[str, Any]] | dict[str, Any]) -> None:
    docs = documents if isinstance(documents, list) else [documents]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


@dataclass
class Operator:
    """The controller process and how to reach it."""

    cluster: Cluster
    workdir: Path
    namespaces: tuple[str, ...]
    port: int = field(default_factory=free_port)
    clock_file: Path = field(init=False)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    kubeconfig: Path = field(init=False)
    restarts: int = 0

    def __post_init__(self) -> None:
        self.clock_file = self.workdir / "clock"
        self.log_path = self.workdir / "controller.log"
        self.kubeconfig = self.workdir / "controller.kubeconfig"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def install(self) -> None:
        """CRDs from crds/, RBAC and ServiceAccounts from the chart, a token for the
        controller's own ServiceAccount."""
        # CRDs as the chart installs them (its templated copies of crds/).
        crds = render_chart(
            *("--show-only", "templates/crds/syncjobs.fleetsync.dev.yaml"),
            *("--show-only", "templates/crds/syncschedules.fleetsync.dev.yaml"),
        )
        apply(self.cluster, crds)
        for crd in ("syncjobs.fleetsync.dev", "syncschedules.fleetsync.dev"):
            self.cluster.kubectl(
                "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s"
            )
        for ns in (SYSTEM_NS, *self.namespaces):
            self.cluster.kubectl("create", "namespace", ns, check=False)
        namespaces = "{" + ",".join(self.namespaces) + "}"
        docs = render_chart(
            "--set", "crds.enabled=false", "--set", f"watchNamespaces={namespaces}",
            "--show-only", "templates/rbac.yaml",
            "--show-only", "templates/serviceaccount.yaml",
        )  # fmt: skip
        apply(self.cluster, docs)
        token = self.cluster.kubectl(
            "create", "token", CONTROLLER_SA, "-n", SYSTEM_NS, "--duration=2h"
        ).stdout.strip()
        admin = yaml.safe_load(self.cluster.kubeconfig.read_text())
        cluster_entry = admin["clusters"][0]["cluster"]
        if "certificate-authority" in cluster_entry:
            ca = Path(cluster_entry["certificate-authority"]).read_bytes()
            cluster_entry = {
                "server": cluster_entry["server"],
                "certificate-authority-data": base64.b64encode(ca).decode(),
            }
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "e2e", "cluster": cluster_entry}],
                    "users": [{"name": CONTROLLER_SA, "user": {"token": token}}],
                    "contexts": [
                        {"name": "c", "context": {"cluster": "e2e", "user": CONTROLLER_SA}}
                    ],
                    "current-context": "c",
                }
            )
        )
        self.kubeconfig.chmod(0o600)

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        log = self.log_path.open("ab")
        args = [
            FLEETSYNC, "controller",
            *[f"--namespace={ns}" for ns in self.namespaces],
            f"--listen=127.0.0.1:{self.port}",
            f"--report-url={self.url}",
            "--worker-image=fleetsync:e2e",
            f"--worker-command={FLEETSYNC}",
            f"--kubeconfig={self.kubeconfig}",
            f"--clock-file={self.clock_file}",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        import httpx

        def healthy() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"controller exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            return False

        wait_for(healthy, timeout=60, what="the controller's /healthz")

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None
            self.restarts += 1

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def set_clock(self, epoch: float | None) -> None:
        self.clock_file.write_text("" if epoch is None else repr(epoch))

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class HelmOperator:
    """The controller as the chart deploys it: ``helm install`` of charts/fleetsync, the
    controller a pod of its Deployment, workers reporting to it. Same interface as Operator.

    On the local cluster the pod is a process of the process kubelet; cluster DNS does not
    exist there, so workers are pointed at the controller's port on 127.0.0.1
    (``controller.reportUrl``). On a kubeconfig cluster (kind) workers use the Service, and
    the suite reaches the controller through ``kubectl port-forward``."""

    cluster: Any
    workdir: Path
    namespaces: tuple[str, ...]
    image: str
    local: bool
    port: int = field(default_factory=free_port)
    restarts: int = 0
    clock_file: Path = field(init=False)
    _forward: subprocess.Popen[bytes] | None = None
    _forward_port: int = 0

    def __post_init__(self) -> None:
        self.clock_file = self.workdir / "clock"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port if self.local else self._forward_port}"

    def _helm(self, *args: str, timeout: float = 300) -> None:
        done = subprocess.run(
            [helm(), f"--kubeconfig={self.cluster.kubeconfig}", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args[:2])} failed:\n{done.stderr}\n{self.log_tail()}"
            )

    def install(self) -> None:
        for ns in (SYSTEM_NS, *self.namespaces):
            self.cluster.kubectl("create", "namespace", ns, check=False)
        repository, _, tag = self.image.rpartition(":")
        values = [
            f"image.repository={repository}",
            f"image.tag={tag}",
            "watchNamespaces={" + ",".join(self.namespaces) + "}",
            "controller.resources.requests.cpu=50m",
        ]
        if self.local:
            # No cluster DNS: workers report to the controller's port on this machine.
            values += [
                f"controller.port={self.port}",
                f"controller.reportUrl={self.url}",
            ]
        # The schedule test's clock: a file on this machine (the local node does not remap
        # host paths) or in the controller pod's /tmp (written by kubectl exec).
        clock = str(self.clock_file) if self.local else "/tmp/clock"
        self._helm(
            "upgrade", "--install", RELEASE, str(ROOT / "charts/fleetsync"),
            "--namespace", SYSTEM_NS, "--wait", "--timeout=4m",
            *[arg for value in values for arg in ("--set", value)],
            "--set-json", "controller.extraArgs=" + json.dumps([f"--clock-file={clock}"]),
        )  # fmt: skip
        self._wait_healthy()

    def _pods(self) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = get_json(
            self.cluster, "pods", "-n", SYSTEM_NS,
            "-l", f"app.kubernetes.io/name=fleetsync,app.kubernetes.io/instance={RELEASE}",
        )["items"]  # fmt: skip
        return pods

    def _wait_healthy(self) -> None:
        import httpx

        def running() -> str | None:
            for pod in self._pods():
                if pod["metadata"].get("deletionTimestamp"):
                    continue
                ready = any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in pod["status"].get("conditions", [])
                )
                if ready:
                    return str(pod["metadata"]["name"])
            return None

        pod = wait_for(running, timeout=120, what="a Ready controller pod")
        if not self.local:
            self._stop_forward()
            self._forward_port = free_port()
            self._forward = subprocess.Popen(
                [self.cluster.kubectl_path, f"--kubeconfig={self.cluster.kubeconfig}",
                 "port-forward", "-n", SYSTEM_NS, f"pod/{pod}", f"{self._forward_port}:http"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip

        def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self.url + "/healthz", timeout=1, trust_env=False).is_success
            return False

        wait_for(healthy, timeout=60, what="the controller pod's /healthz")

    def _stop_forward(self) -> None:
        if self._forward is not None:
            self._forward.terminate()
            self._forward.wait(timeout=10)
            self._forward = None

    def start(self) -> None:
        self.cluster.kubectl("scale", "deployment", RELEASE, "-n", SYSTEM_NS, "--replicas=1")
        self._wait_healthy()

    def kill(self) -> None:
        """Scale to zero and force-delete the pod: no graceful shutdown, as when its node
        dies; start() brings a new pod."""
        self.cluster.kubectl("scale", "deployment", RELEASE, "-n", SYSTEM_NS, "--replicas=0")
        for pod in self._pods():
            self.cluster.kubectl(
                "delete", "pod", pod["metadata"]["name"], "-n", SYSTEM_NS,
                "--grace-period=0", "--force", check=False,
            )  # fmt: skip
        wait_for(lambda: not self._pods(), timeout=60, what="the controller pod gone")
        self._stop_forward()
        self.restarts += 1

    def stop(self) -> None:
        self._stop_forward()

    def set_clock(self, epoch: float | None) -> None:
        text = "" if epoch is None else repr(epoch)
        if self.local:
            self.clock_file.write_text(text)
            return
        self.cluster.kubectl(
            "exec", "-n", SYSTEM_NS, f"deployment/{RELEASE}", "-c", "controller", "--",
            "python", "-c", f"open('/tmp/clock', 'w').write({text!r})",
        )  # fmt: skip

    def log_tail(self, lines: int = 60) -> str:
        if self.local:  # every controller pod's output, killed ones included
            logs = sorted(
                self.cluster.kubelet.root.glob(f"{SYSTEM_NS}_{RELEASE}-*/log"),
                key=lambda p: p.stat().st_mtime,
            )
            text = "".join(p.read_text(errors="replace") for p in logs)
        else:
            text = "".join(
                self.cluster.pod_log(SYSTEM_NS, pod["metadata"]["name"]) for pod in self._pods()
            )
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_operator(
    cluster: Any, workdir: Path, namespaces: tuple[str, ...]
) -> Iterator[Operator | HelmOperator]:
    """The controller the target asks for (target.py): a local process or the chart's."""
    from target import TARGET

    operator: Operator | HelmOperator
    if TARGET.operator == "helm":
        operator = HelmOperator(cluster, workdir, namespaces, TARGET.image, TARGET.local)
        operator.install()
    else:
        operator = Operator(cluster, workdir, namespaces)
        operator.install()
        operator.start()
    try:
        yield operator
    finally:
        operator.stop()
