"""The Helm chart, rendered by a real helm (built from its Go module by tests/tools/helm.sh),
and the Dockerfile it deploys: what helm lint/template say, what the rendered objects
promise (restricted pods, least privilege), and that image and chart agree."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetsync.api.crd import build_crds, chart_crd_text
from fleetsync.controller.build import NON_ROOT_UID, WorkerSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/fleetsync"


@cache
def helm() -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "tests/tools/helm.sh")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def template(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm(), "template", "fleetsync", str(CHART), "-n", "fleetsync-system",
         "--kube-version", "1.36.3", *args],
        check=check, capture_output=True, text=True,
    )  # fmt: skip


def render(*args: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(template(*args).stdout) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_helm_lint_passes() -> None:
    out = subprocess.run([helm(), "lint", str(CHART)], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_typo_in_values_fails_naming_the_key() -> None:
    out = template("--set", "controler.logLevel=DEBUG", check=False)
    assert out.returncode != 0
    assert "controler" in out.stderr


def test_pods_run_under_the_restricted_pod_security_standard() -> None:
    deployment = of_kind(render(), "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["replicas"] == 1


def test_workers_report_to_the_service_unless_told_otherwise() -> None:
    def controller(*args: str) -> dict[str, Any]:
        pod = of_kind(render(*args), "Deployment")[0]["spec"]["template"]["spec"]
        return dict(pod["containers"][0])

    default = controller()
    assert "--report-url=http://fleetsync.fleetsync-system.svc:8080" in default["args"]
    assert "--listen=0.0.0.0:8080" in default["args"]
    service = of_kind(render(), "Service")[0]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    custom = controller(
        "--set", "controller.port=9123", "--set", "controller.reportUrl=http://127.0.0.1:9123",
        "--set-json", 'controller.extraArgs=["--clock-file=/tmp/clock"]',
    )  # fmt: skip
    assert custom["args"][1:3] == ["--listen=0.0.0.0:9123", "--report-url=http://127.0.0.1:9123"]
    assert custom["args"][-1] == "--clock-file=/tmp/clock"
    assert custom["ports"] == [{"name": "http", "containerPort": 9123}]
    bad = template("--set-json", 'controller.extraArgs=["tick"]', check=False)
    assert bad.returncode != 0 and "extraArgs" in bad.stderr


def test_crds_are_the_generated_ones_and_kept_on_uninstall() -> None:
    for crd in build_crds():
        path = CHART / "templates/crds" / f"{crd['metadata']['name']}.yaml"
        assert path.read_text() == chart_crd_text(crd), (
            f"{path} is stale: run `fleetsync crds --output-dir crds --chart-dir "
            "charts/fleetsync/templates/crds`"
        )
    crds = of_kind(render(), "CustomResourceDefinition")
    assert len(crds) == 2
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    assert of_kind(render("--set", "crds.enabled=false"), "CustomResourceDefinition") == []
    kept = of_kind(render("--set", "crds.keep=false"), "CustomResourceDefinition")
    assert all(not (c["metadata"].get("annotations") or {}) for c in kept)


def test_namespaced_mode_grants_roles_only_in_watched_namespaces() -> None:
    docs = render("--set", "watchNamespaces={energy,water}")
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["energy", "water"]
    cluster_roles = of_kind(docs, "ClusterRole")
    # Only TokenReview is cluster-scoped.
    assert [r["rules"] for r in cluster_roles] == [
        [
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["tokenreviews"],
                "verbs": ["create"],
            }
        ]
    ]
    args = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=energy" in args and "--namespace=water" in args


def test_rbac_is_least_privilege_and_workers_have_none() -> None:
    docs = render()
    rules = [rule for r in of_kind(docs, "ClusterRole") for rule in r["rules"]]
    verbs = {verb for rule in rules for verb in rule["verbs"]}
    assert "*" not in verbs and "escalate" not in verbs and "bind" not in verbs
    assert not any("secrets" in rule["resources"] for rule in rules)  # referenced, never read
    bindings = of_kind(docs, "ClusterRoleBinding") + of_kind(docs, "RoleBinding")
    subjects = {s["name"] for b in bindings for s in b["subjects"]}
    assert subjects == {"fleetsync-controller"}
    workers = [
        sa for sa in of_kind(docs, "ServiceAccount") if sa["metadata"]["name"] == "fleetsync-worker"
    ]
    assert workers and workers[0]["automountServiceAccountToken"] is False


def test_every_rbac_rule_is_commented() -> None:
    text = (CHART / "templates/_helpers.tpl").read_text() + (
        CHART / "templates/rbac.yaml"
    ).read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:"):
            assert lines[i - 1].strip().startswith("#"), f"uncommented rule: {line}"


def test_every_value_is_commented() -> None:
    """Each value has a comment above it, or is one of a group of plain settings (such as
    securityContext's fields) whose parent key has one."""
    lines = (CHART / "values.yaml").read_text().splitlines()

    def indent(line: str) -> int:
        return len(line) - len(line.lstrip())

    def commented(i: int) -> bool:
        return i > 0 and lines[i - 1].strip().startswith("#")

    for i, line in enumerate(lines):
        if not re.match(r"^\s*[A-Za-z]\w*:\s*\S", line) or commented(i):
            continue
        j = i
        while j > 0 and indent(lines[j - 1]) == indent(line) and not commented(j):
            j -= 1
        parent = j - 1
        ok = commented(j) or (
            parent >= 0 and indent(lines[parent]) < indent(line) and commented(parent)
        )
        assert ok, f"values.yaml line {i + 1} has no comment: {line}"


def dockerfile() -> dict[str, str]:
    directives: dict[str, str] = {}
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        match = re.match(r"^(USER|ENTRYPOINT)\s+(.*)$", line)
        if match:
            directives[match.group(1)] = match.group(2)
    return directives


def test_image_user_and_entrypoint_match_the_chart_and_the_worker_pods() -> None:
    image = dockerfile()
    uid = int(image["USER"].split(":")[0])
    assert uid == NON_ROOT_UID
    entrypoint = yaml.safe_load(image["ENTRYPOINT"])
    assert entrypoint == list(WorkerSettings(image="x", report_url="y").command)
    deployment = of_kind(render(), "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid
    container = pod["containers"][0]
    assert "command" not in container  # the image's ENTRYPOINT runs
    assert container["args"][0] == "controller"


def test_the_image_installs_the_wheel_of_the_code_under_test(tmp_path: Path) -> None:
    """The Dockerfile builds its wheel from pyproject.toml and operator/ (the tests' code):
    the wheel holds exactly the package's sources, py.typed included."""
    import zipfile

    text = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml" in text and "COPY operator ./operator" in text
    assert "python -m build --wheel" in text
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("fleetsync-*.whl")
    names = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("fleetsync/")}
    package = ROOT / "operator"
    sources = {
        str(p.relative_to(package))
        for p in (package / "fleetsync").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert names == sources
    assert "fleetsync/py.typed" in names
