"""SyncSchedule decisions: ``plan_schedule`` is pure, so every policy is checked here
without a cluster, on an injected clock (the e2e suite runs one schedule for real)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import SYNCJOB
from pydantic import ValidationError

from fleetsync.api.v1alpha1.syncschedule import SyncScheduleSpec
from fleetsync.controller.observe import rfc3339
from fleetsync.controller.schedule import MAX_MISSED, NeverFires, due_tick, next_tick, run_name
from fleetsync.controller.schedules import (
    ScheduleDecision,
    plan_invalid,
    plan_schedule,
    spec_errors,
    status_changed,
)


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def spec(**extra: Any) -> SyncScheduleSpec:
    body: dict[str, Any] = {
        "schedule": "0 * * * *",
        "timeZone": "UTC",
        "jobTemplate": {"spec": SYNCJOB["spec"]},
    }
    body.update(extra)
    return SyncScheduleSpec.model_validate(body)


def schedule(status: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "hourly",
            "namespace": "energy",
            "uid": "s-1",
            "generation": 1,
            "creationTimestamp": "2026-06-01T00:00:00Z",
            **meta,
        },
        "status": {"lastScheduleTime": "2026-06-01T09:00:00Z"} if status is None else status,
    }


def run(name: str, phase: str | None = None, created: str = "2026-06-01T09:00:00Z") -> Any:
    status = {"phase": phase, "completionTime": created} if phase else {}
    meta = {"name": name, "uid": f"u-{name}", "creationTimestamp": created}
    return {"metadata": meta, "status": status}


TEN = utc(2026, 6, 1, 10, 0, 30)  # just after the 10:00 tick
TICK_RUN = run_name("hourly", utc(2026, 6, 1, 10, 0))


def created(decision: ScheduleDecision) -> list[str]:
    return [r.name for r in decision.create]


def active(decision: ScheduleDecision) -> list[str]:
    return [a["name"] for a in decision.status["active"]]


# --- concurrency policies ------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["Allow", "Forbid", "Replace"])
def test_a_due_tick_without_an_active_run_creates_one(policy: str) -> None:
    decision = plan_schedule(schedule(), spec(concurrencyPolicy=policy), [], TEN)
    assert created(decision) == [TICK_RUN] == active(decision)
    assert decision.replace == [] and decision.status["lastScheduleTime"] == "2026-06-01T10:00:00Z"
    assert decision.status["nextScheduleTime"] == "2026-06-01T11:00:00Z"


def test_allow_runs_beside_the_active_run() -> None:
    decision = plan_schedule(schedule(), spec(concurrencyPolicy="Allow"), [run("old")], TEN)
    assert created(decision) == [TICK_RUN]
    assert active(decision) == ["old", TICK_RUN]


def test_forbid_skips_while_a_run_is_active_and_says_so() -> None:
    decision = plan_schedule(schedule(), spec(concurrencyPolicy="Forbid"), [run("old")], TEN)
    assert created(decision) == [] and active(decision) == ["old"]
    assert decision.status["missed"] == 1
    assert [e.reason for e in decision.events] == ["RunSkipped"]


def test_replace_deletes_the_active_run_and_no_longer_lists_it() -> None:
    runs = [run("old"), run("done", "Succeeded")]
    decision = plan_schedule(schedule(), spec(concurrencyPolicy="Replace"), runs, TEN)
    assert decision.replace == ["old"]
    assert active(decision) == [TICK_RUN]


def test_nothing_is_due_between_ticks() -> None:
    status = {"lastScheduleTime": "2026-06-01T10:00:00Z"}
    decision = plan_schedule(schedule(status), spec(), [], TEN + 600)
    assert created(decision) == [] and decision.events == []


# --- suspend, run-now, history -------------------------------------------------------------


def test_suspend_creates_nothing_and_is_a_stable_state() -> None:
    decision = plan_schedule(schedule(), spec(suspend=True), [], TEN)
    assert created(decision) == [] and decision.status["nextScheduleTime"] is None
    conditions = {c["type"]: (c["status"], c["reason"]) for c in decision.status["conditions"]}
    assert conditions == {
        "Ready": ("True", "Suspended"),
        "Stalled": ("False", "Valid"),
        "Suspended": ("True", "Suspended"),
    }
    suspended = next(c for c in decision.status["conditions"] if c["type"] == "Suspended")
    assert "suspended" in suspended["message"]


def test_run_now_starts_one_run_per_annotation_value_even_when_suspended() -> None:
    body = schedule(annotations={"fleetsync.dev/run-now": "a"})
    first = plan_schedule(body, spec(suspend=True), [], TEN)
    assert len(first.create) == 1 and first.create[0].name.startswith("hourly-now-")
    assert not first.create[0].announce and first.status["lastRunNow"] == "a"
    again = plan_schedule({**body, "status": first.status}, spec(suspend=True), [], TEN + 5)
    assert again.create == []


def test_history_limits_prune_the_oldest_finished_runs_per_outcome() -> None:
    runs = [run(f"ok{i}", "Succeeded", f"2026-06-01T0{i}:00:00Z") for i in range(4)]
    runs += [run(f"bad{i}", "Failed", f"2026-06-01T0{i}:30:00Z") for i in range(3)]
    runs.append(run("part", "PartiallySucceeded", "2026-06-01T08:00:00Z"))
    runs.sort(key=lambda r: r["metadata"]["creationTimestamp"])
    limits = spec(successfulJobsHistoryLimit=3, failedJobsHistoryLimit=1)
    decision = plan_schedule(schedule(), limits, runs, TEN)
    assert decision.prune == ["ok0", "ok1", "bad0", "bad1"]
    assert decision.status["lastSuccessfulTime"] == "2026-06-01T08:00:00Z"


def test_a_tick_outside_the_active_window_is_counted_not_run() -> None:
    window = spec(activeWindow={"start": "11:00", "end": "12:00"})
    decision = plan_schedule(schedule(), window, [], TEN)
    assert created(decision) == [] and decision.status["skippedOutsideWindow"] == 1


# --- CronJob-exact tick choice -------------------------------------------------------------


def test_the_latest_tick_is_taken_however_long_the_controller_was_away() -> None:
    last = utc(2026, 5, 1, 0, 0)
    now = utc(2026, 6, 1, 10, 0)  # exactly on a tick, 700+ hourly ticks later
    tick = due_tick(spec(), last, now)
    assert tick is not None and tick.time == now and tick.missed == MAX_MISSED


def test_missed_ticks_are_counted_within_the_starting_deadline_window() -> None:
    last, now = utc(2026, 6, 1, 0, 0), utc(2026, 6, 1, 10, 5)
    assert due_tick(spec(), last, now) == due_tick(spec(), last, now)
    unbounded = due_tick(spec(), last, now)
    assert unbounded is not None and unbounded.missed == 9  # 01:00 … 09:00
    windowed = due_tick(spec(startingDeadlineSeconds=3 * 3600), last, now)
    assert windowed is not None and windowed.time == utc(2026, 6, 1, 10, 0)
    assert windowed.missed == 2  # 08:00 and 09:00 lie inside (07:05, 10:05]
    assert due_tick(spec(startingDeadlineSeconds=60), last, now) is None  # 10:00 too late


def test_a_schedule_that_never_fires_stalls_with_one_warning_per_generation() -> None:
    never = spec(schedule="59 23 31 2 *")
    with pytest.raises(NeverFires):
        next_tick(never, TEN)
    first = plan_schedule(schedule(), never, [], TEN)
    assert created(first) == [] and first.status["nextScheduleTime"] is None
    stalled = next(c for c in first.status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert "spec.schedule" in stalled["message"] and stalled["observedGeneration"] == 1
    assert [(e.reason, e.warning) for e in first.events] == [("InvalidSpec", True)]
    again = plan_schedule(schedule(first.status), never, [], TEN + 60)
    assert again.events == [] and again.status == first.status
    edited = plan_schedule(schedule(first.status, generation=2), never, [], TEN + 120)
    assert len(edited.events) == 1


def test_an_invalid_spec_names_the_field_and_warns_once() -> None:
    with pytest.raises(ValidationError) as error:
        spec(concurrencyPolicy="Sometimes")
    problem = spec_errors(error.value)
    assert problem.startswith("spec.concurrencyPolicy:")
    first = plan_invalid(schedule(), problem, TEN)
    assert first.create == [] and len(first.events) == 1 and first.events[0].warning
    assert plan_invalid(schedule(first.status), problem, TEN + 1).events == []


# --- daylight saving time in the schedule's zone -------------------------------------------


def simulate(s: SyncScheduleSpec, start: float, end: float, step: float = 300) -> list[float]:
    """Reconcile every ``step`` seconds from ``start`` to ``end``; the ticks that ran."""
    body = schedule({}, creationTimestamp=rfc3339(start))
    ran: list[float] = []
    now = start
    while now <= end:
        decision = plan_schedule(body, s, [], now)
        if decision.create:
            ran.append(datetime.fromisoformat(decision.status["lastScheduleTime"]).timestamp())
        body = {**body, "status": decision.status}
        now += step
    return ran


def test_a_tick_in_the_repeated_hour_runs_once() -> None:
    # Europe/Berlin 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    nightly = spec(schedule="30 2 * * *", timeZone="Europe/Berlin")
    ran = simulate(nightly, utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 4, 0))
    assert ran == [utc(2026, 10, 25, 0, 30)]  # 02:30 CEST, not again at 02:30 CET
    # Away through the first 02:45 and back at 02:10 CET: that 02:45 CEST was the latest.
    late = due_tick(spec(schedule="45 2 * * *", timeZone="Europe/Berlin"),
                    utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 1, 10))  # fmt: skip
    assert late is not None and late.time == utc(2026, 10, 25, 0, 45)
    hourly = spec(schedule="0 * * * *", timeZone="Europe/Berlin")
    ran = simulate(hourly, utc(2026, 10, 24, 22, 30), utc(2026, 10, 25, 2, 30))
    # 01:00 CEST, 02:00 CEST, (02:00 CET skipped), 03:00 CET
    assert ran == [utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 2, 0)]


def test_a_tick_in_the_skipped_hour_runs_when_cronjob_would() -> None:
    # Europe/Berlin 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that
    # day. CronJob (robfig/cron) skips it; so do we, and the next run is the next 02:30.
    nightly = spec(schedule="30 2 * * *", timeZone="Europe/Berlin")
    ran = simulate(nightly, utc(2026, 3, 28, 23, 0), utc(2026, 3, 30, 1, 0), step=900)
    assert ran == [utc(2026, 3, 30, 0, 30)]
    assert next_tick(nightly, utc(2026, 3, 28, 23, 0)) == utc(2026, 3, 30, 0, 30)
    hourly = spec(schedule="0 * * * *", timeZone="Europe/Berlin")
    ran = simulate(hourly, utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 1, 30))
    assert ran == [utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 1, 0)]  # 01:00 CET, 03:00 CEST


def test_a_steady_schedule_writes_no_status() -> None:
    first = plan_schedule(schedule(), spec(suspend=True), [], TEN)
    assert status_changed(first.status, schedule()["status"])
    # What the API server keeps: nulls removed by the merge patch.
    stored = {k: v for k, v in first.status.items() if v is not None}
    again = plan_schedule(schedule(stored), spec(suspend=True), [], TEN + 60)
    assert not status_changed(again.status, stored)
    assert status_changed({**stored, "missed": 1}, stored)
