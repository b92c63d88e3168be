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


def render_chart(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            helm(),
            "template",
            RELEASE,
            str(ROOT / "charts/fleetsync"),
            "--namespace",
            SYSTEM_NS,
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


@contextlib.contextmanager
def running_operator(
    cluster: Cluster, workdir: Path, namespaces: tuple[str, ...]
) -> Iterator[Operator]:
    operator = Operator(cluster, workdir, namespaces)
    operator.install()
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
