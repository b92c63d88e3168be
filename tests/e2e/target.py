"""Where the e2e suite runs, chosen by environment variables; every test is the same in each.

``FLEETSYNC_E2E_CLUSTER``
    ``local`` (default): the control plane built from Go modules plus the process kubelet,
    started by the suite. ``kubeconfig``: an existing cluster (``make e2e-kind`` makes one
    with kind) named by ``FLEETSYNC_E2E_KUBECONFIG``; nothing is started or torn down but the
    test namespaces and the release.
``FLEETSYNC_E2E_OPERATOR``
    ``process``: the controller as a local process with the chart's RBAC (default on the
    local cluster: it can be killed and restarted in milliseconds). ``helm``: ``helm
    install`` of charts/fleetsync, the controller a pod of its Deployment (default, and the
    only choice, on a kubeconfig cluster).
``FLEETSYNC_E2E_SINK``
    ``sqlite`` (default on the local cluster, whose pods share this machine's filesystem)
    or ``postgres`` (a PostgreSQL server started by the suite; the only choice when pods
    run elsewhere).
``FLEETSYNC_E2E_HOST``
    The address worker pods reach this machine at; the suite's servers (vendor simulator,
    PostgreSQL, DynamoDB) listen on it. Default 127.0.0.1; for kind, the gateway of the
    ``kind`` Docker network (the Makefile finds it).
``FLEETSYNC_E2E_IMAGE``
    The controller and worker image on a kubeconfig cluster (``fleetsync:e2e``, loaded into
    kind by the Makefile).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TARGET", "Target"]


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = os.environ.get(name, "") or default
    if value not in allowed:
        raise SystemExit(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class Target:
    cluster: str
    operator: str
    sink: str
    host: str
    image: str
    kubeconfig: Path | None

    @classmethod
    def from_env(cls) -> Target:
        cluster = _choice("FLEETSYNC_E2E_CLUSTER", "local", ("local", "kubeconfig"))
        remote = cluster == "kubeconfig"
        operator = _choice(
            "FLEETSYNC_E2E_OPERATOR", "helm" if remote else "process", ("process", "helm")
        )
        sink = _choice("FLEETSYNC_E2E_SINK", "postgres" if remote else "sqlite",
                       ("sqlite", "postgres"))  # fmt: skip
        if remote and operator == "process":
            raise SystemExit(
                "FLEETSYNC_E2E_OPERATOR=process needs the local cluster: worker pods on "
                "another machine cannot reach a controller on this one"
            )
        if remote and sink == "sqlite":
            raise SystemExit(
                "FLEETSYNC_E2E_SINK=sqlite needs the local cluster: pods elsewhere do not "
                "share this machine's files"
            )
        kubeconfig = os.environ.get("FLEETSYNC_E2E_KUBECONFIG")
        if remote and not kubeconfig:
            raise SystemExit("FLEETSYNC_E2E_CLUSTER=kubeconfig needs FLEETSYNC_E2E_KUBECONFIG")
        return cls(
            cluster=cluster,
            operator=operator,
            sink=sink,
            host=os.environ.get("FLEETSYNC_E2E_HOST", "") or "127.0.0.1",
            image=os.environ.get("FLEETSYNC_E2E_IMAGE", "") or "fleetsync:e2e",
            kubeconfig=Path(kubeconfig) if remote and kubeconfig else None,
        )

    @property
    def local(self) -> bool:
        return self.cluster == "local"


TARGET = Target.from_env()
