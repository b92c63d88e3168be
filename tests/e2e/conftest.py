"""The e2e suite's cluster, chosen by target.py: by default a real control plane plus the
process kubelet, started once per session and stopped at its end (missing binaries fail the
suite — they never skip it); or an existing cluster named by a kubeconfig (kind)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "controlplane"))
sys.path.insert(0, str(Path(__file__).parents[1]))

from cluster import ControlPlane, KubectlError, find_binaries
from kubelet import ProcessKubelet
from target import TARGET


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.path):
            item.add_marker(pytest.mark.e2e)


def pytest_report_header() -> str:
    return (
        f"e2e target: cluster={TARGET.cluster} operator={TARGET.operator} sink={TARGET.sink} "
        f"host={TARGET.host}"
    )


@dataclass
class Cluster:
    """The local control plane and its process kubelet."""

    plane: ControlPlane
    kubelet: ProcessKubelet

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    @property
    def server(self) -> str:
        return self.plane.server

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl(*args, check=check, input=input, timeout=timeout)

    def pod_log(self, namespace: str, pod: str) -> str:
        """A pod's output, replaced containers included (the node keeps it per pod uid)."""
        logs = sorted(
            self.kubelet.root.glob(f"{namespace}_{pod}_*/log"), key=lambda p: p.stat().st_mtime
        )
        return "".join(p.read_text(errors="replace") for p in logs)

    def follow_log(self, namespace: str, pod: str) -> Callable[[], str]:
        """A pod's whole output, readable after the pod is gone."""
        return lambda: self.pod_log(namespace, pod)

    def diagnostics(self) -> str:
        return self.plane.logs() + "\nkubelet errors:\n" + "\n".join(self.kubelet.errors[-10:])


@dataclass
class ExternalCluster:
    """A cluster the suite did not start (kind): reached through its kubeconfig only."""

    kubeconfig: Path
    kubectl_path: str

    @property
    def server(self) -> str:
        return str(self.kubectl("config", "view", "--minify", "-o",
                                "jsonpath={.clusters[0].cluster.server}").stdout)  # fmt: skip

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        command = [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args]
        done = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )  # fmt: skip
        if check and done.returncode != 0:
            raise KubectlError(done.returncode, command, done.stdout, done.stderr)
        return done

    def pod_log(self, namespace: str, pod: str) -> str:
        previous = self.kubectl("logs", "-n", namespace, pod, "--previous", check=False)
        current = self.kubectl("logs", "-n", namespace, pod, check=False)
        return (previous.stdout if previous.returncode == 0 else "") + current.stdout

    def follow_log(self, namespace: str, pod: str) -> Callable[[], str]:
        """A pod's whole output, readable after the pod is gone: streamed from now on."""
        stream = subprocess.Popen(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", "logs", "-f", "-n",
             namespace, pod],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

        def read() -> str:
            try:
                out, _ = stream.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                stream.kill()
                out, _ = stream.communicate()
            return out

        return functools.cache(read)

    def diagnostics(self) -> str:
        return self.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False).stdout


def _external_cluster() -> ExternalCluster:
    assert TARGET.kubeconfig is not None
    if not TARGET.kubeconfig.is_file():
        pytest.fail(f"FLEETSYNC_E2E_KUBECONFIG={TARGET.kubeconfig}: no such file")
    try:
        kubectl = str(find_binaries() / "kubectl")
    except RuntimeError:
        kubectl = shutil.which("kubectl") or pytest.fail("kubectl not found")
    cluster = ExternalCluster(TARGET.kubeconfig, kubectl)
    version = cluster.kubectl("version", "-o", "json", check=False)
    if version.returncode != 0:
        pytest.fail(f"the cluster of {TARGET.kubeconfig} does not answer:\n{version.stderr}")
    server = json.loads(version.stdout).get("serverVersion", {}).get("gitVersion")
    print(f"\nexternal cluster {cluster.server} ({server})", file=sys.stderr)
    return cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster | ExternalCluster]:
    if not TARGET.local:
        yield _external_cluster()
        return
    root = tmp_path_factory.mktemp("cluster")
    try:
        plane = ControlPlane(root)
    except RuntimeError as error:
        pytest.fail(f"the e2e control plane is not available: {error}")
    started = time.monotonic()
    try:
        plane.start()
    except RuntimeError as error:
        pytest.fail(str(error))
    pki = plane.pki
    kubelet = ProcessKubelet(
        server=plane.server,
        ca=pki / "ca.crt",
        cert=pki / "admin.crt",
        key=pki / "admin.key",
        root=root / "node",
    )
    kubelet.start()
    print(f"\ncontrol plane and node up in {time.monotonic() - started:.1f}s", file=sys.stderr)
    try:
        yield Cluster(plane, kubelet)
    finally:
        kubelet.stop()
        plane.stop()


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str | None]:
    """A PostgreSQL server worker pods can reach (listening on FLEETSYNC_E2E_HOST), when the
    target's sink is postgres; None otherwise."""
    if TARGET.sink != "postgres":
        yield None
        return
    from support.postgres import postgres_server

    with postgres_server(host=TARGET.host) as dsn:
        yield dsn
