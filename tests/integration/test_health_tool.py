"""The verdict GitOps tools reach on SyncJobs and SyncSchedules, checked without a cluster:
hand-written objects, one per row of issue 15's table, through tests/tools/health (kstatus
from sigs.k8s.io/cli-utils and the shipped Argo CD Lua script run by gopher-lua, the
interpreter Argo CD embeds). The e2e suite (tests/e2e/test_health.py) checks the same
verdicts on live objects the controller wrote.

The tool is a Go program built once into the cache (tests/tools/health/build.sh); the first
run of this module builds it, later runs reuse the binary until its sources change.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from fleetsync.api.constants import Phase, Reason
from fleetsync.controller.conditions import Health, conditions_for, merge_conditions

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "charts/fleetsync/files/argocd-health.lua"
Verdict = tuple[str, str]  # (kstatus, argo)


@cache
def tool() -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "tests/tools/health/build.sh")],
        check=True, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def verdicts(*objects: dict[str, Any], script: Path = SCRIPT) -> list[dict[str, str]]:
    done = subprocess.run(
        [tool(), "-lua", str(script)],
        input="\n".join(json.dumps(o) for o in objects),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def cond(kind: str, status: bool, reason: str, message: str = "", gen: int = 1) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-29T08:00:00Z",
        "observedGeneration": gen,
    }


def syncjob(
    phase: str | None,
    conditions: list[dict[str, Any]],
    *,
    generation: int = 1,
    observed: int | None = 1,
    suspend: bool = False,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": conditions}
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": f"run-{(phase or 'new').lower()}", "namespace": "energy",
                     "generation": generation},
        "spec": {"suspend": suspend},
        "status": status if phase is not None else None,
    }  # fmt: skip


def syncschedule(
    conditions: list[dict[str, Any]] | None,
    *,
    suspend: bool = False,
    generation: int = 1,
    observed: int | None = 1,
) -> dict[str, Any]:
    status: dict[str, Any] = {"nextScheduleTime": "2026-11-29T09:00:00Z"}
    if conditions is not None:
        status["conditions"] = conditions
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncSchedule",
        "metadata": {"name": "every-15", "namespace": "energy", "generation": generation},
        "spec": {"schedule": "*/15 * * * *", "suspend": suspend},
        "status": status,
    }


def running(phase: str, message: str, *, degraded: str = "") -> list[dict[str, Any]]:
    return [
        cond("Reconciling", True, phase, message),
        cond("Stalled", False, phase),
        cond("Ready", False, phase, message),
        cond("Complete", False, phase),
        cond("Failed", False, phase),
        cond("Degraded", bool(degraded), "BreakerOpen" if degraded else "Healthy", degraded),
        cond("Suspended", False, phase),
    ]


def finished(reason: str, message: str, *, partial: bool = False) -> list[dict[str, Any]]:
    return [
        cond("Reconciling", False, reason),
        cond("Stalled", False, reason),
        cond("Ready", True, reason, message),
        cond("Complete", True, reason, message),
        cond("Failed", False, reason),
        cond("Degraded", partial, "ItemsFailing" if partial else reason,
             message if partial else ""),
        cond("Suspended", False, reason),
    ]  # fmt: skip


FAILED = [
    cond("Reconciling", False, "InvalidSpec"),
    cond("Stalled", True, "InvalidSpec", "a worker rejected the configuration (exit 64): token"),
    cond("Ready", False, "InvalidSpec", "a worker rejected the configuration (exit 64): token"),
    cond("Complete", False, "InvalidSpec"),
    cond("Failed", True, "InvalidSpec", "a worker rejected the configuration (exit 64): token"),
    cond("Suspended", False, "InvalidSpec"),
]
# Suspended as a deliberate stable state: Ready=True (reason Suspended) so kstatus reads
# Current, Suspended=True saying why.
SUSPENDED = [
    cond("Reconciling", False, "Suspended"),
    cond("Stalled", False, "Suspended"),
    cond("Ready", True, "Suspended", "suspended; progress is kept"),
    cond("Complete", False, "Suspended"),
    cond("Failed", False, "Suspended"),
    cond("Suspended", True, "Suspended", "suspended; progress is kept"),
]

CASES: list[tuple[str, dict[str, Any], Verdict, str]] = [
    # (id, object, (kstatus, argo), a word the Argo message must carry)
    ("pending", syncjob("Pending", running("Pending", "waiting for shard pods")),
     ("InProgress", "Progressing"), "waiting for shard pods"),
    ("running", syncjob("Running", running("Running", "4 shard pods running")),
     ("InProgress", "Progressing"), "4 shard pods running"),
    ("running with an open breaker",
     syncjob("Running", running("Running", "4 shard pods running",
                                degraded="circuit breaker open: flaky")),
     ("InProgress", "Progressing"), "circuit breaker open: flaky"),
    ("succeeded", syncjob("Succeeded", finished("Succeeded", "2000 items in sync")),
     ("Current", "Healthy"), "2000 items in sync"),
    ("partially succeeded",
     syncjob("PartiallySucceeded", finished(
         "PartiallySucceeded", "3 of 2000 items failed and were dead-lettered", partial=True)),
     ("Current", "Healthy"), "3 of 2000 items failed"),
    ("failed", syncjob("Failed", FAILED), ("Failed", "Degraded"), "exit 64"),
    ("suspended", syncjob("Suspended", SUSPENDED, suspend=True),
     ("Current", "Suspended"), "suspended"),
    ("generation ahead of a finished run",
     syncjob("Succeeded", finished("Succeeded", "2000 items in sync"), generation=2),
     ("InProgress", "Progressing"), "generation 2"),
    ("no status yet", syncjob(None, []), ("Current", "Progressing"), "Waiting"),
    ("schedule ready",
     syncschedule([cond("Ready", True, "AsExpected", "next run at 09:00"),
                   cond("Stalled", False, "AsExpected"),
                   cond("Suspended", False, "AsExpected")]),
     ("Current", "Healthy"), "next run"),
    ("schedule invalid",
     syncschedule([cond("Ready", False, "InvalidSpec", "spec.timeZone: 'Mars/Olympus' is not"
                        " an IANA time zone"),
                   cond("Stalled", True, "InvalidSpec", "spec.timeZone: 'Mars/Olympus' is not"
                        " an IANA time zone"),
                   cond("Suspended", False, "InvalidSpec")]),
     ("Failed", "Degraded"), "timeZone"),
    ("schedule suspended",
     syncschedule([cond("Ready", True, "Suspended", "suspended: no new runs"),
                   cond("Stalled", False, "Suspended"),
                   cond("Suspended", True, "Suspended", "suspended: no new runs")],
                  suspend=True),
     ("Current", "Suspended"), "suspended"),
    ("schedule edited, not yet observed",
     syncschedule([cond("Ready", True, "AsExpected", "next run at 09:00")], generation=3,
                  observed=2),
     ("InProgress", "Progressing"), "generation 3"),
    ("schedule without conditions (an older controller)", syncschedule(None),
     ("Current", "Progressing"), "Ready"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "obj", "expected", "word"), CASES, ids=[c[0] for c in CASES])
def test_each_row_gets_the_verdicts_of_kstatus_and_argo_cd(
    case: str, obj: dict[str, Any], expected: Verdict, word: str
) -> None:
    [got] = verdicts(obj)
    assert (got["kstatus"], got["argo"]) == expected, got
    assert word in got["argoMessage"], got
    assert (got["kind"], got["name"]) == (obj["kind"], obj["metadata"]["name"])


def test_a_failed_run_carries_its_failed_condition_message_to_both_tools() -> None:
    [got] = verdicts(syncjob("Failed", FAILED))
    expected = "a worker rejected the configuration (exit 64): token"
    assert got["kstatusMessage"] == expected and got["argoMessage"] == expected


def test_suspended_with_ready_false_reads_in_progress_to_kstatus() -> None:
    """Why a Suspended run must not carry Ready=False: kstatus reads it as still working, so
    `helm --wait` and Flux hang on a run the user deliberately paused."""
    held = [c | {"status": "False"} if c["type"] == "Ready" else c for c in SUSPENDED]
    [got] = verdicts(syncjob("Suspended", held, suspend=True))
    assert (got["kstatus"], got["argo"]) == ("InProgress", "Suspended"), got


def test_a_list_from_kubectl_yields_one_verdict_per_item() -> None:
    items = [obj for _, obj, _, _ in CASES]
    got = verdicts({"apiVersion": "v1", "kind": "List", "items": items})
    assert [(v["kstatus"], v["argo"]) for v in got] == [expected for _, _, expected, _ in CASES]


def test_the_script_needs_no_library_argo_cd_leaves_closed(tmp_path: Path) -> None:
    """Argo CD runs resource.customizations scripts without the string, os and math libraries
    unless useOpenLibs is set; the tool does the same, so a script using them reads Unknown."""
    script = tmp_path / "health.lua"
    script.write_text('return {status = "Healthy", message = string.format("%d", 1)}\n')
    [got] = verdicts(syncjob("Succeeded", finished("Succeeded", "ok")), script=script)
    assert got["argo"] == "Unknown" and "format" in got["argoMessage"], got


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('return {status = "Sunny"}', "invalid health status"),
        ("return {}", "cannot unmarshal array"),
        ('return "Healthy"', "expect table output"),
    ],
)
def test_what_argo_cd_rejects_reads_unknown(tmp_path: Path, body: str, message: str) -> None:
    script = tmp_path / "health.lua"
    script.write_text(body + "\n")
    [got] = verdicts(syncjob("Succeeded", finished("Succeeded", "ok")), script=script)
    assert got["argo"] == "Unknown" and message in got["argoMessage"], got


# The controller's own conditions (conditions.py, API.md's table) through the same tools.
# Phase.SUSPENDED joins this list once the controller writes Suspended as a stable state
# (Ready not False): today's Ready=False reads InProgress, see the test above.
CONTROLLER_ROWS: list[tuple[Phase, str, str, Verdict]] = [
    (Phase.PENDING, Reason.PENDING, "waiting for shard pods", ("InProgress", "Progressing")),
    (Phase.RUNNING, Reason.RUNNING, "4 shard pods running", ("InProgress", "Progressing")),
    (Phase.SUCCEEDED, Reason.SUCCEEDED, "20 items in sync", ("Current", "Healthy")),
    (Phase.PARTIALLY_SUCCEEDED, Reason.PARTIALLY_SUCCEEDED,
     "2 of 20 items failed and were dead-lettered", ("Current", "Healthy")),
    (Phase.FAILED, Reason.DEADLINE_EXCEEDED, "not finished within deadlineSeconds=60",
     ("Failed", "Degraded")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("phase", "reason", "message", "expected"), CONTROLLER_ROWS, ids=[r[0] for r in CONTROLLER_ROWS]
)
def test_the_conditions_the_controller_writes_get_the_expected_verdicts(
    phase: Phase, reason: str, message: str, expected: Verdict
) -> None:
    failed = 2 if phase is Phase.PARTIALLY_SUCCEEDED else 0
    written = merge_conditions(
        [], conditions_for(phase, reason, message, Health(failed_items=failed)),
        generation=4, now="2026-11-29T08:00:00Z",
    )  # fmt: skip
    status = {
        "phase": phase.value,
        "observedGeneration": 4,
        "conditions": [c.model_dump(mode="json", by_alias=True) for c in written],
    }
    obj = syncjob(phase.value, [], generation=4) | {"status": status}
    [got] = verdicts(obj)
    assert (got["kstatus"], got["argo"]) == expected, got
    assert message in got["argoMessage"], got
