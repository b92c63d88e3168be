"""``fleetsync run``'s coordinator keeps its progress in the state dir and both coordinators
end a run by the same rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetsync.api.constants import Phase, Reason
from fleetsync.api.progress import CheckpointWire, ReportWire, ShardState
from fleetsync.api.v1alpha1 import SyncJobSpec
from fleetsync.api.v1alpha1.status import ItemCounts
from fleetsync.controller.observe import observe
from fleetsync.coordination.phase import final_phase
from fleetsync.coordination.progress import RunProgress
from fleetsync.local.coordinator import LocalCoordinator
from fleetsync.local.state import RunState, fingerprint, stop_leftover_workers


def report(pod: str, seq: int, state: ShardState, counts: dict[str, int] | None) -> ReportWire:
    checkpoint = None
    if counts is not None:
        checkpoint = CheckpointWire(watermark=-1, above="", counts=counts)
    return ReportWire(
        run="r", shard=0, pod=pod, seq=seq, state=state, shardTotal=100, seen=100,
        checkpoint=checkpoint, vendors=[], failedSample=[], wants={},
        cost={"vendorCalls": 0, "sinkCalls": 0, "writeUnits": 0.0, "readUnits": 0.0,
              "unprocessedItems": 0, "throttles": 0},
    )  # fmt: skip


def a_spec(count: int = 100) -> SyncJobSpec:
    return SyncJobSpec.model_validate(
        {
            "fleet": {"inventory": {"generate": {"count": count}}},
            "source": {"http": {"url": "https://api.vendor.example/plants/{id}"}},
            "sink": {"sqlite": {"path": "x.db", "table": "plants"}},
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_every_report_is_kept_before_its_reply_and_a_finished_run_starts_fresh(
    tmp_path: Path,
) -> None:
    # A shard fetches past a checkpoint once a reply says it was taken: a kill -9 of the
    # runner right after must find it in the state dir (the fault suite's kill-run case
    # re-fetched 666 items when progress was kept only once a second).
    state = RunState(tmp_path, fingerprint(a_spec(), 1))
    clock = Clock()
    coordinator = LocalCoordinator(RunProgress("r", 1), clock=clock, state=state)
    coordinator.handle(report("p", 1, "starting", None))
    assert state.load() == coordinator.progress.snapshot()
    clock.now += 0.1
    coordinator.handle(report("p", 2, "running", {"synced": 40}))
    restored = RunProgress("r", 1)
    restored.restore(state.load() or {})
    assert restored.resumed == 40
    coordinator.handle(report("p", 3, "done", {"synced": 100}))
    coordinator.persist(clock.now, final=True)
    assert state.load() is None, "a finished run starts fresh"
    assert json.loads(state.path.read_text())["finished"] is True


def test_a_changed_manifest_or_shard_count_starts_over(tmp_path: Path) -> None:
    kept = RunState(tmp_path, fingerprint(a_spec(), 2))
    kept.save({"checkpoints": {}}, finished=False)
    assert kept.load() == {"checkpoints": {}}
    assert RunState(tmp_path, fingerprint(a_spec(), 3)).load() is None
    assert RunState(tmp_path, fingerprint(a_spec(200), 2)).load() is None
    kept.path.write_text("{not json")
    assert kept.load() is None
    assert not list(tmp_path.glob(".progress-*")), "no temporary file left behind"


def test_leftover_pid_files_of_other_processes_are_never_killed(tmp_path: Path) -> None:
    (tmp_path / "shard-0.pid").write_text("1")  # init: not a worker of this run
    (tmp_path / "shard-1.pid").write_text("not a pid")
    assert stop_leftover_workers(tmp_path, wait_seconds=0) == []
    assert not list(tmp_path.glob("shard-*.pid"))


def job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "plants-0930"}, "status": status}


COMPLETE = job(conditions=[{"type": "Complete", "status": "True"}])


@pytest.mark.parametrize(
    "items",
    [
        ItemCounts(total=300, failed=300),
        ItemCounts(total=1000, synced=975, remaining=25),
        ItemCounts(total=100, synced=95, failed=5),
        ItemCounts(total=100, synced=100),
    ],
)
def test_the_controller_ends_a_run_by_the_same_rule_as_fleetsync_run(items: ItemCounts) -> None:
    spec = a_spec(items.total).model_copy(
        update={"dead_letter": a_spec().dead_letter.model_copy(update={"max_item_failures": 1000})}
    )
    seen = observe(spec, COMPLETE, items, stuck=None)
    verdict = final_phase(items, 1000)
    assert (seen.phase, seen.reason, seen.message) == (
        verdict.phase,
        verdict.reason,
        verdict.message,
    )
    assert seen.terminal


def test_while_running_only_too_many_failures_end_a_run_early() -> None:
    spec = a_spec().model_copy(
        update={"dead_letter": a_spec().dead_letter.model_copy(update={"max_item_failures": 3})}
    )
    items = ItemCounts(total=100, failed=4, remaining=96)
    seen = observe(spec, job(active=1), items, stuck=None)
    assert (seen.phase, seen.reason) == (Phase.FAILED, Reason.TOO_MANY_FAILURES)
    assert observe(spec, job(active=1), ItemCounts(total=100, remaining=100), stuck=None).phase == (
        Phase.RUNNING
    )
