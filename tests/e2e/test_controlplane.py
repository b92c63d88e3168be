"""The e2e control plane itself: a real API server and Job controller, and a node that runs
pods as processes. What the operator's tests build on."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from target import TARGET

PY = sys.executable

# These test the suite's own control plane and process kubelet (pods running this machine's
# Python); on a kubeconfig cluster (kind) there is nothing of ours to test.
pytestmark = pytest.mark.skipif(
    not TARGET.local, reason="tests of the local control plane; the target is a kubeconfig cluster"
)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")


def get(cluster: Any, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return data


def job(name: str, ns: str, script: str, *, completions: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": completions,
            "backoffLimitPerIndex": 2,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": "none", "command": [PY, "-c", script]}
                    ],
                }
            },
            **spec,
        },
    }


@pytest.fixture
def ns(cluster: Any, request: pytest.FixtureRequest) -> str:
    name = "cp-" + request.node.name.replace("_", "-")[5:40].strip("-").lower()
    cluster.kubectl("create", "namespace", name)
    wait_for(
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        30,
        "the default ServiceAccount",
    )
    return name


def apply(cluster: Any, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))


def test_version_reports_the_pinned_release(cluster: Any) -> None:
    out = cluster.kubectl("version", "-o", "json")
    assert json.loads(out.stdout)["serverVersion"]["gitVersion"] == "v1.36.3"
    raw = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    assert (raw["gitVersion"], raw["major"], raw["minor"]) == ("v1.36.3", "1", "36")


def test_an_indexed_job_runs_each_index_as_a_process(cluster: Any, ns: str, tmp_path: Path) -> None:
    script = (
        "import os, pathlib; "
        f"pathlib.Path('{tmp_path}', os.environ['JOB_COMPLETION_INDEX']).write_text('done')"
    )
    apply(cluster, job("indexed", ns, script, completions=3))
    out = cluster.kubectl(
        "wait", "--for=condition=Complete", "job/indexed", "-n", ns, "--timeout=60s", check=False
    )
    assert out.returncode == 0, out.stderr + cluster.diagnostics()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2"]


def test_a_deleted_pod_is_replaced_and_the_job_completes(
    cluster: Any, ns: str, tmp_path: Path
) -> None:
    flag = tmp_path / "first-run"
    script = (
        "import pathlib, time, sys; p = pathlib.Path(sys.argv[1]); "
        "first = not p.exists(); p.write_text('x'); time.sleep(30 if first else 0)"
    )
    body = job("replaced", ns, script)
    body["spec"]["template"]["spec"]["containers"][0]["command"] += [str(flag)]
    body["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 2
    apply(cluster, body)
    first = wait_for(
        lambda: [
            p
            for p in get(cluster, "pods", "-n", ns)["items"]
            if p["status"].get("phase") == "Running"
        ],
        30,
        "a running pod",
    )[0]["metadata"]["name"]
    wait_for(flag.exists, 30, "the first process to start")
    cluster.kubectl("delete", "pod", first, "-n", ns, "--wait=false")
    out = cluster.kubectl(
        "wait", "--for=condition=Complete", "job/replaced", "-n", ns, "--timeout=60s", check=False
    )
    assert out.returncode == 0, out.stderr + cluster.diagnostics()
    names = {p["metadata"]["name"] for p in get(cluster, "pods", "-n", ns)["items"]}
    assert first not in names


def test_exit_64_fails_the_job_at_once_with_pod_failure_policy(cluster: Any, ns: str) -> None:
    body = job("invalid", ns, "raise SystemExit(64)", completions=2)
    body["spec"]["podFailurePolicy"] = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "main", "operator": "In", "values": [64]},
            }
        ]
    }
    apply(cluster, body)
    out = cluster.kubectl(
        "wait", "--for=condition=Failed", "job/invalid", "-n", ns, "--timeout=60s", check=False
    )
    assert out.returncode == 0, out.stderr + cluster.diagnostics()
    status = get(cluster, "job", "invalid", "-n", ns)["status"]
    reasons = {c["reason"] for c in status["conditions"] if c["type"] == "Failed"}
    assert reasons == {"PodFailurePolicy"}
    assert status.get("failed", 0) <= 2  # no retries


def test_a_missing_secret_keeps_the_pod_waiting_with_the_reason(cluster: Any, ns: str) -> None:
    body = job("nosecret", ns, "print('never')")
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "K", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}
    ]
    apply(cluster, body)

    def waiting() -> dict[str, Any] | None:
        for pod in get(cluster, "pods", "-n", ns)["items"]:
            for status in pod["status"].get("containerStatuses") or []:
                state = status["state"].get("waiting")
                if state:
                    return dict(state)
        return None

    state = wait_for(waiting, 30, "a waiting container")
    assert state["reason"] == "CreateContainerConfigError"
    assert '"absent"' in state["message"]


def test_projected_tokens_are_pod_bound_and_pass_token_review(
    cluster: Any, ns: str, tmp_path: Path
) -> None:
    out_file = tmp_path / "token"
    script = f"import shutil; shutil.copy('/var/run/tok/token', '{out_file}')"
    body = job("token", ns, script)
    pod = body["spec"]["template"]["spec"]
    pod["volumes"] = [
        {
            "name": "tok",
            "projected": {
                "sources": [{"serviceAccountToken": {"audience": "fleetsync.dev", "path": "token"}}]
            },
        }
    ]
    pod["containers"][0]["command"] = [PY, "-c", script.replace("/var/run/tok/token", "TOKEN")]
    pod["containers"][0]["env"] = [{"name": "TOKEN", "value": "/var/run/tok/token"}]
    pod["containers"][0]["command"] = [
        PY, "-c", f"import os, shutil; shutil.copy(os.environ['TOKEN'], '{out_file}')",
    ]  # fmt: skip
    pod["containers"][0]["volumeMounts"] = [{"name": "tok", "mountPath": "/var/run/tok"}]
    apply(cluster, body)
    cluster.kubectl("wait", "--for=condition=Complete", "job/token", "-n", ns, "--timeout=60s")
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": out_file.read_text(), "audiences": ["fleetsync.dev"]},
    }
    out = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review))
    status = json.loads(out.stdout)["status"]
    assert status["authenticated"] is True
    assert status["user"]["username"] == f"system:serviceaccount:{ns}:default"
    assert status["user"]["extra"]["authentication.kubernetes.io/pod-name"][0].startswith("token-")


def test_deleting_a_namespace_cascades(cluster: Any, ns: str) -> None:
    body = job("sleeper", ns, "import time; time.sleep(60)")
    del body["spec"]["backoffLimitPerIndex"]  # see the next test
    apply(cluster, body)
    wait_for(lambda: get(cluster, "pods", "-n", ns)["items"], 30, "a pod")
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    wait_for(
        lambda: cluster.kubectl("get", "namespace", ns, check=False).returncode != 0,
        90,
        "the namespace to go",
    )


def test_a_backoff_limit_per_index_job_holds_its_namespace_until_the_job_is_deleted(
    cluster: Any, ns: str
) -> None:
    """Upstream behaviour the fleetsync controller works around: namespace deletion removes
    pods first (OrderedNamespaceDeletion, GA in 1.34); with backoffLimitPerIndex the Job
    controller keeps a failed pod's tracking finalizer until the index's replacement exists,
    and a terminating namespace refuses the replacement. Deleting the Job releases it."""
    apply(cluster, job("sleeper", ns, "import time; time.sleep(60)"))
    wait_for(
        lambda: any(p["status"].get("phase") == "Running"
                    for p in get(cluster, "pods", "-n", ns)["items"]),
        30, "a running pod",
    )  # fmt: skip
    cluster.kubectl("delete", "namespace", ns, "--wait=false")

    def held() -> bool:
        pods = get(cluster, "pods", "-n", ns)["items"]
        return bool(pods) and all(
            p["status"].get("phase") == "Failed"
            and "batch.kubernetes.io/job-tracking" in (p["metadata"].get("finalizers") or [])
            for p in pods
        )

    wait_for(held, 30, "the failed pod held by its finalizer")
    time.sleep(5)
    assert held()
    assert cluster.kubectl("get", "job", "sleeper", "-n", ns, check=False).returncode == 0
    cluster.kubectl("delete", "job", "sleeper", "-n", ns, "--wait=false")
    wait_for(
        lambda: cluster.kubectl("get", "namespace", ns, check=False).returncode != 0,
        90,
        "the namespace to go once the Job is deleted",
    )


def test_an_image_runs_the_installed_fleetsync_entrypoint(cluster: Any, ns: str) -> None:
    body = job("entrypoint", ns, "unused")
    container = body["spec"]["template"]["spec"]["containers"][0]
    del container["command"]
    container["image"] = "ghcr.io/fleetsync/fleetsync:test"
    container["args"] = ["crds"]  # ENTRYPOINT ["fleetsync"] + args, as in the Dockerfile
    apply(cluster, body)
    out = cluster.kubectl(
        "wait", "--for=condition=Complete", "job/entrypoint", "-n", ns, "--timeout=60s", check=False
    )
    assert out.returncode == 0, out.stderr + cluster.diagnostics()


def test_pod_active_deadline_kills_the_pod(cluster: Any, ns: str) -> None:
    body = job("deadline", ns, "import time; time.sleep(120)")
    body["spec"]["template"]["spec"]["activeDeadlineSeconds"] = 2
    body["spec"]["backoffLimitPerIndex"] = 0
    apply(cluster, body)

    def failed() -> dict[str, Any] | None:
        for pod in get(cluster, "pods", "-n", ns)["items"]:
            if pod["status"].get("phase") == "Failed":
                return dict(pod["status"])
        return None

    status = wait_for(failed, 30, "the pod to be killed at its deadline")
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "DeadlineExceeded"
