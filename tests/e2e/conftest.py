"""The e2e suite's cluster: a real control plane plus the process kubelet, started once per
session and stopped at its end. Missing binaries fail the suite — they never skip it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "controlplane"))

from cluster import ControlPlane
from kubelet import ProcessKubelet


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@dataclass
class Cluster:
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

    def diagnostics(self) -> str:
        return self.plane.logs() + "\nkubelet errors:\n" + "\n".join(self.kubelet.errors[-10:])


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
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
