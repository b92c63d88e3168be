"""The controller's pure functions: planning, the Job it builds, phase and conditions,
schedule ticks, and who may report. The e2e suite proves the same on a real API server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fleetsync.api.constants import Phase
from fleetsync.api.progress import ReportWire
from fleetsync.api.v1alpha1 import SyncJobSpec
from fleetsync.api.v1alpha1.status import ItemCounts, SyncJobStatus
from fleetsync.api.v1alpha1.syncschedule import SyncScheduleSpec
from fleetsync.controller.build import (
    SECRETS_MOUNT,
    TOKEN_AUDIENCE,
    WorkerSettings,
    build_config_map,
    build_job,
)
from fleetsync.controller.observe import build_status, observe, pod_problem
from fleetsync.controller.plan import plan_run
from fleetsync.controller.schedule import due_tick, in_window, run_name, run_now_name
from fleetsync.controller.server import TokenReviewer
from fleetsync.coordination.progress import RunProgress

SETTINGS = WorkerSettings(image="ghcr.io/fleetsync/fleetsync:test", report_url="http://c:8080")


def spec(*, limited: bool = True, **extra: Any) -> SyncJobSpec:
    body: dict[str, Any] = {
        "fleet": {"inventory": {"generate": {"count": 7000}}},
        "source": {
            "http": {
                "url": "https://api.vendor.example/plants/{id}",
                "auth": {"secretRef": {"name": "vendor-keys", "key": "token"}},
            },
            "rateLimit": {"requestsPerSecond": 25},
        },
        "sink": {"postgres": {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "table": "plants"}},
    }
    if not limited:
        del body["source"]["rateLimit"]
    body.update(extra)
    return SyncJobSpec.model_validate(body)


SYNCJOB = {"metadata": {"name": "plants-0930", "namespace": "energy", "uid": "u-1"}}


# --- planning ------------------------------------------------------------------------------


def test_auto_plan_shards_by_fleet_size_and_caps_parallelism_by_vendor_budget() -> None:
    plan = plan_run(spec(), 7000)
    assert plan.shards == 7
    # 25 req/s cannot keep more than one pod busy: more pods would split the same budget.
    assert plan.parallelism == 1
    assert "25 req/s" in plan.reason


def test_deadline_raises_parallelism_when_vendors_allow() -> None:
    fast = spec(limited=False, deadlineSeconds=10)
    plan = plan_run(fast, 7000)
    assert plan.parallelism == 6  # 7000/10*1.5 = 1050 items/s at 200 per pod
    assert plan.parallelism <= plan.shards


def test_explicit_sharding_is_kept() -> None:
    plan = plan_run(spec(sharding={"shards": 4, "parallelism": 4}), 2000)
    assert (plan.shards, plan.parallelism) == (4, 4)


# --- the Job ------------------------------------------------------------------------------


def test_job_is_indexed_restricted_and_fails_fast_on_invalid_config() -> None:
    s = spec(sharding={"shards": 4, "parallelism": 2}, deadlineSeconds=120)
    job = build_job(SYNCJOB, s, plan_run(s, 2000), SETTINGS)
    assert job["metadata"]["name"] == "plants-0930"  # fixed: a retried create cannot duplicate
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    js = job["spec"]
    assert (js["completionMode"], js["completions"], js["parallelism"]) == ("Indexed", 4, 2)
    assert js["activeDeadlineSeconds"] == 120
    rules = js["podFailurePolicy"]["rules"]
    assert {r["action"]: r["onExitCodes"]["values"] for r in rules if "onExitCodes" in r} == {
        "FailJob": [64],
        "Ignore": [75],
    }
    pod = js["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Secrets are referenced by name and mounted, never copied into the Job or ConfigMap.
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"vendor-keys", "pg"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert f"{SECRETS_MOUNT}/vendor-keys" in mounts
    token = next(v for v in pod["volumes"] if v["name"] == "report-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == TOKEN_AUDIENCE


def test_config_map_carries_the_spec_not_secret_values() -> None:
    cm = build_config_map(SYNCJOB, spec())
    text = cm["data"]["syncjob.yaml"]
    assert "vendor-keys" in text and "dsnSecretRef" in text
    assert len(text) < 10_000


def test_worker_overrides_reach_the_pod() -> None:
    s = spec(
        worker={"serviceAccountName": "workload-id", "image": "mine:1", "nodeSelector": {"a": "b"}}
    )
    pod = build_job(SYNCJOB, s, plan_run(s, 10), SETTINGS)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "workload-id"
    assert pod["containers"][0]["image"] == "mine:1"
    assert pod["nodeSelector"] == {"a": "b"}


# --- phase and conditions -----------------------------------------------------------------


def job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "plants-0930"}, "status": status}


def cond(kind: str, reason: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": "m"}


ITEMS = ItemCounts(total=10, synced=10)
FAILING = ItemCounts(total=10, synced=8, failed=2)


@pytest.mark.parametrize(
    ("the_job", "items", "phase", "reason"),
    [
        (None, ITEMS, Phase.PENDING, "Pending"),
        (job(active=2), ITEMS, Phase.RUNNING, "Running"),
        (job(), ItemCounts(total=10, remaining=10), Phase.PENDING, "Pending"),
        # Every shard done, the Job not yet marked Complete: still Running, never Pending.
        (job(succeeded=4), ITEMS, Phase.RUNNING, "Running"),
        (job(), ItemCounts(total=10, synced=4, remaining=6), Phase.RUNNING, "Running"),
        (job(conditions=[cond("Complete")]), ITEMS, Phase.SUCCEEDED, "Succeeded"),
        (
            job(conditions=[cond("Complete")]),
            FAILING,
            Phase.PARTIALLY_SUCCEEDED,
            "PartiallySucceeded",
        ),
        (
            job(conditions=[cond("Failed", "DeadlineExceeded")]),
            ITEMS,
            Phase.FAILED,
            "DeadlineExceeded",
        ),
        (job(conditions=[cond("Failed", "PodFailurePolicy")]), ITEMS, Phase.FAILED, "InvalidSpec"),
    ],
)
def test_phase_from_job_and_progress(
    the_job: dict[str, Any] | None, items: ItemCounts, phase: Phase, reason: str
) -> None:
    observation = observe(spec(), the_job, items, stuck=None)
    assert (observation.phase, observation.reason) == (phase, reason)


def conditions(phase_job: dict[str, Any], items: ItemCounts, s: SyncJobSpec) -> dict[str, str]:
    observation = observe(s, phase_job, items, stuck=None)
    status = build_status(
        SyncJobStatus(),
        generation=3,
        observation=observation,
        progress=None,
        plan=None,
        job=phase_job,
        now=1_700_000_000,
    )
    assert all(c.observed_generation == 3 for c in status.conditions)
    return {c.type: c.status for c in status.conditions}


def test_conditions_follow_the_table() -> None:
    s = spec()
    partial = conditions(job(conditions=[cond("Complete")]), FAILING, s)
    assert partial | {} == {
        "Reconciling": "False",
        "Stalled": "False",
        "Ready": "True",
        "Complete": "True",
        "Failed": "False",
        "Degraded": "True",
        "Suspended": "False",
    }
    failed = conditions(job(conditions=[cond("Failed", "BackoffLimitExceeded")]), ITEMS, s)
    assert (failed["Stalled"], failed["Failed"], failed["Ready"]) == ("True", "True", "False")
    suspended = conditions(job(), ITEMS, spec(suspend=True))
    assert (suspended["Suspended"], suspended["Reconciling"]) == ("True", "False")
    assert (suspended["Ready"], suspended["Stalled"]) == ("True", "False")  # kstatus: Current
    running = conditions(job(active=1), ITEMS, s)
    assert (running["Reconciling"], running["Ready"]) == ("True", "False")


def test_a_pod_that_cannot_start_stalls_the_run_naming_the_secret() -> None:
    pod = {
        "metadata": {"name": "plants-0930-0-abc", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "containerStatuses": [
                {
                    "state": {
                        "waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": 'secret "vendor-keys" not found',
                        }
                    }
                }
            ]
        },
    }
    created = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert pod_problem([pod], created + 5, grace_seconds=20) is None
    problem = pod_problem([pod], created + 30, grace_seconds=20)
    assert problem is not None and "vendor-keys" in problem
    observation = observe(spec(), job(active=1), ITEMS, stuck=problem)
    assert observation.phase is Phase.FAILED and not observation.terminal


def test_status_counts_come_from_progress_and_sample_is_bounded() -> None:
    progress = RunProgress("r", 1)
    report: ReportWire = {
        "run": "r",
        "shard": 0,
        "pod": "p",
        "state": "running",
        "shardTotal": 100,
        "seen": 100,
        "checkpoint": {"watermark": 0, "above": "", "counts": {"synced": 50, "failed": 50}},
        "vendors": [],
        "cost": {
            "vendorCalls": 100,
            "sinkCalls": 3,
            "writeUnits": 50.0,
            "readUnits": 0.0,
            "unprocessedItems": 0,
            "throttles": 0,
        },
        "failedSample": [{"key": f"k{i}", "reason": "bad", "attempts": 4} for i in range(50)],
        "wants": {},
    }
    progress.accept(report, 1.0)
    observation = observe(spec(), job(active=1), progress.items(), stuck=None)
    status = build_status(
        SyncJobStatus(),
        generation=1,
        observation=observation,
        progress=progress,
        plan=None,
        job=job(active=1),
        now=2.0,
    )
    assert status.progress == "100/100"
    assert status.failed_items is not None and status.failed_items.count == 50
    assert len(status.failed_items.sample) == 20
    assert status.cost is not None and status.cost.vendor_calls == 100


def test_progress_survives_a_snapshot_round_trip() -> None:
    progress = RunProgress("r", 2)
    report: ReportWire = {
        "run": "r",
        "shard": 1,
        "pod": "p1",
        "state": "interrupted",
        "shardTotal": 10,
        "seen": 10,
        "checkpoint": {"watermark": 6, "above": "", "counts": {"synced": 6}},
        "vendors": [],
        "cost": {
            "vendorCalls": 6,
            "sinkCalls": 1,
            "writeUnits": 6.0,
            "readUnits": 0.0,
            "unprocessedItems": 0,
            "throttles": 0,
        },
        "failedSample": [],
        "wants": {},
    }
    progress.accept(report, 1.0)
    restored = RunProgress("r", 2)
    restored.restore(progress.snapshot())
    assert restored.resume_for(1) == report["checkpoint"]
    assert restored.items() == progress.items()
    assert restored.cost() == progress.cost()


# --- schedules ----------------------------------------------------------------------------


def schedule(**extra: Any) -> SyncScheduleSpec:
    body: dict[str, Any] = {
        "schedule": "*/15 * * * *",
        "timeZone": "Europe/Berlin",
        "activeWindow": {"start": "05:00", "end": "20:00"},
        "jobTemplate": {"spec": spec().model_dump(mode="json", by_alias=True, exclude_none=True)},
    }
    body.update(extra)
    return SyncScheduleSpec.model_validate(body)


def berlin(hour: int, minute: int) -> float:
    # 2026-06-01 is CEST (UTC+2).
    return datetime(2026, 6, 1, hour - 2, minute, tzinfo=UTC).timestamp()


def test_tick_inside_and_outside_the_window() -> None:
    s = schedule()
    inside = due_tick(s, berlin(9, 50), berlin(10, 1))
    assert inside is not None and inside.time == berlin(10, 0) and inside.in_window
    outside = due_tick(s, berlin(20, 10), berlin(20, 16))
    assert outside is not None and not outside.in_window
    assert due_tick(s, berlin(10, 0), berlin(10, 14)) is None


def test_no_catch_up_storm_after_an_outage() -> None:
    tick = due_tick(schedule(), berlin(6, 0), berlin(12, 5))
    assert tick is not None
    assert tick.time == berlin(12, 0)  # only the newest tick runs
    assert tick.missed == 23  # the rest are counted, not replayed


def test_starting_deadline() -> None:
    # As CronJob: a tick older than the deadline is not considered at all.
    assert due_tick(schedule(startingDeadlineSeconds=60), berlin(9, 50), berlin(10, 5)) is None
    tick = due_tick(schedule(startingDeadlineSeconds=600), berlin(9, 50), berlin(10, 5))
    assert tick is not None and tick.time == berlin(10, 0)


def test_overnight_window() -> None:
    from fleetsync.api.v1alpha1.syncschedule import ActiveWindow

    window = ActiveWindow(start="22:00", end="04:00")
    assert in_window(window, datetime(2026, 1, 1, 23, 0))
    assert in_window(window, datetime(2026, 1, 1, 3, 59))
    assert not in_window(window, datetime(2026, 1, 1, 12, 0))


def test_run_names_are_fixed_per_tick_and_per_request() -> None:
    assert run_name("plants", 1_800_000_000) == run_name("plants", 1_800_000_030)
    assert run_now_name("plants", "a") == run_now_name("plants", "a") != run_now_name("plants", "b")


# --- who may report -----------------------------------------------------------------------


def test_only_pod_bound_tokens_of_our_audience_are_identities() -> None:
    good = {
        "authenticated": True,
        "audiences": [TOKEN_AUDIENCE],
        "user": {
            "username": "system:serviceaccount:energy:fleetsync-worker",
            "extra": {
                "authentication.kubernetes.io/pod-name": ["plants-0930-0-x"],
                "authentication.kubernetes.io/pod-uid": ["uid-x"],
            },
        },
    }
    identity = TokenReviewer._identity(good)
    assert identity is not None and (identity.namespace, identity.pod) == (
        "energy",
        "plants-0930-0-x",
    )
    assert (
        TokenReviewer._identity({**good, "audiences": ["https://kubernetes.default.svc"]}) is None
    )
    assert TokenReviewer._identity({**good, "authenticated": False}) is None
    unbound = {**good, "user": {"username": good["user"]["username"], "extra": {}}}  # type: ignore[index]
    assert TokenReviewer._identity(unbound) is None
