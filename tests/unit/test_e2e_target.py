"""The e2e suite's target selection (tests/e2e/target.py): defaults per cluster, and
combinations that cannot work refused with the reason, before any cluster is touched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))

from target import Target


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLUSTER", "OPERATOR", "SINK", "HOST", "IMAGE", "KUBECONFIG"):
        monkeypatch.delenv(f"FLEETSYNC_E2E_{name}", raising=False)


def test_the_default_is_the_local_control_plane() -> None:
    target = Target.from_env()
    assert (target.cluster, target.operator, target.sink, target.host) == (
        "local", "process", "sqlite", "127.0.0.1",
    )  # fmt: skip


def test_a_kubeconfig_cluster_runs_the_chart_into_postgres(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLEETSYNC_E2E_CLUSTER", "kubeconfig")
    monkeypatch.setenv("FLEETSYNC_E2E_KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("FLEETSYNC_E2E_HOST", "172.18.0.1")
    target = Target.from_env()
    assert (target.operator, target.sink, target.image) == ("helm", "postgres", "fleetsync:e2e")
    assert target.kubeconfig == tmp_path / "kubeconfig" and not target.local


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"FLEETSYNC_E2E_CLUSTER": "kind"}, "expected one of local, kubeconfig"),
        ({"FLEETSYNC_E2E_CLUSTER": "kubeconfig"}, "needs FLEETSYNC_E2E_KUBECONFIG"),
        (
            {"FLEETSYNC_E2E_CLUSTER": "kubeconfig", "FLEETSYNC_E2E_KUBECONFIG": "k",
             "FLEETSYNC_E2E_OPERATOR": "process"},
            "cannot reach a controller on this one",
        ),
        (
            {"FLEETSYNC_E2E_CLUSTER": "kubeconfig", "FLEETSYNC_E2E_KUBECONFIG": "k",
             "FLEETSYNC_E2E_SINK": "sqlite"},
            "do not share this machine's files",
        ),
    ],
)  # fmt: skip
def test_impossible_targets_are_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], reason: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=reason):
        Target.from_env()
