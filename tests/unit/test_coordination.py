"""What both coordinators share: folding reports (fold_report) and the final-phase rule."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetsync.api.constants import Phase, Reason
from fleetsync.api.progress import CheckpointWire, ReportWire, ShardState
from fleetsync.api.v1alpha1.status import ItemCounts
from fleetsync.coordination.budgets import BudgetBook
from fleetsync.coordination.fold import fold_report, release_run
from fleetsync.coordination.phase import final_phase, too_many_failures
from fleetsync.coordination.progress import RunProgress

OUTCOMES = ("synced", "unchanged", "failed")


def report(
    pod: str,
    seq: int,
    state: ShardState,
    counts: dict[str, int] | None,
    *,
    shard: int = 0,
    total: int | None = 100,
    wants: dict[str, float] | None = None,
) -> ReportWire:
    checkpoint = None
    if counts is not None:
        checkpoint = CheckpointWire(
            watermark=sum(counts.values()) - 1, above="", counts=dict(counts)
        )
    return ReportWire(
        run="r",
        shard=shard,
        pod=pod,
        seq=seq,
        state=state,
        shardTotal=total,
        seen=total or 0,
        checkpoint=checkpoint,
        vendors=[],
        cost={
            "vendorCalls": seq,
            "sinkCalls": 0,
            "writeUnits": 0.0,
            "readUnits": 0.0,
            "unprocessedItems": 0,
            "throttles": 0,
        },
        failedSample=[],
        wants=wants or {},
    )


def empty() -> dict[str, int]:
    return {}


# --- fold_report ---------------------------------------------------------------------------


def test_a_replacements_starting_report_never_replaces_the_stored_checkpoint() -> None:
    progress, book = RunProgress("r", 1), BudgetBook()
    fold_report(progress, book, report("p1", 1, "starting", empty()), 1.0, stop=False)
    fold_report(progress, book, report("p1", 2, "running", {"synced": 500}), 2.0, stop=False)
    # The replacement's hello carries an empty checkpoint (watermark -1): it must be told 499.
    reply = fold_report(progress, book, report("p2", 1, "starting", empty()), 3.0, stop=False)
    assert reply["resume"] is not None and reply["resume"]["watermark"] == 499
    assert progress.items().synced == 500
    # ... and the first report of the replacement (its own seq starts again) is taken.
    fold_report(progress, book, report("p2", 1, "running", {"synced": 510}), 4.0, stop=False)
    assert progress.items().synced == 510


def test_a_delayed_older_report_never_regresses_a_shard() -> None:
    progress, book = RunProgress("r", 1), BudgetBook()
    fold_report(progress, book, report("p", 1, "starting", None), 1.0, stop=False)
    fold_report(progress, book, report("p", 5, "done", {"synced": 100}), 2.0, stop=False)
    reply = fold_report(progress, book, report("p", 3, "running", {"synced": 41}), 3.0, stop=False)
    assert progress.items().synced == 100 and progress.views[0].state == "done"
    assert reply["grants"] == {} and not reply["stop"]
    assert progress.cost().vendor_calls == 5  # the stale report's counters are not taken


def test_a_replaced_pod_is_told_to_stop_even_when_it_says_hello_again() -> None:
    progress, book = RunProgress("r", 1), BudgetBook()
    fold_report(progress, book, report("old", 1, "starting", None), 1.0, stop=False)
    fold_report(progress, book, report("new", 1, "starting", None), 2.0, stop=False)
    assert fold_report(progress, book, report("old", 2, "running", {}), 3.0, stop=False)["stop"]
    late_hello = report("old", 1, "starting", None)
    assert fold_report(progress, book, late_hello, 4.0, stop=False)["stop"]
    assert progress.views[0].pod == "new"


def test_budgets_are_renewed_while_running_and_released_when_final() -> None:
    progress, book = RunProgress("r", 1), BudgetBook()
    fold_report(progress, book, report("p", 1, "starting", None), 100.0, stop=False)
    running = report("p", 2, "running", {"synced": 1}, wants={"k": 10.0})
    reply = fold_report(progress, book, running, 100.0, stop=True)
    assert reply["grants"]["k"] and reply["rates"] == {"k": 10.0} and reply["stop"]
    assert book.holders("k") == ["r/0/p"]
    fold_report(progress, book, report("p", 3, "done", {"synced": 100}), 101.0, stop=False)
    assert book.holders("k") == []


def test_a_replacement_pod_is_a_new_budget_holder_and_its_predecessor_is_released() -> None:
    # Its predecessor may be alive (a zombie told to stop at its next report): the two must
    # never be handed the same slots.
    progress, book = RunProgress("r", 1), BudgetBook()
    fold_report(progress, book, report("old", 1, "starting", None), 100.0, stop=False)
    wants = {"k": 10.0}
    old = fold_report(progress, book, report("old", 2, "running", {}, wants=wants), 100.0,
                      stop=False)  # fmt: skip
    fold_report(progress, book, report("new", 1, "starting", None), 101.0, stop=False)
    assert book.holders("k") == []
    new = fold_report(progress, book, report("new", 1, "running", {}, wants=wants), 101.0,
                      stop=False)  # fmt: skip
    assert book.holders("k") == ["r/0/new"]
    book.renew("other/0/x", wants, 101.0)
    release_run(book, "r", 102.0)  # the run was deleted
    assert book.holders("k") == ["other/0/x"]
    for grant in new["grants"]["k"]:
        for before in old["grants"]["k"]:
            overlap = grant["start"] < before["until"] and before["start"] < grant["until"]
            assert not overlap or not set(grant["residues"]) & set(before["residues"])


def test_progress_snapshot_keeps_sequences_replaced_pods_and_the_resumed_count() -> None:
    progress, book = RunProgress("r", 2), BudgetBook()
    fold_report(progress, book, report("a", 1, "starting", None), 1.0, stop=False)
    fold_report(progress, book, report("a", 7, "running", {"synced": 30}), 2.0, stop=False)
    fold_report(progress, book, report("b", 1, "starting", None), 3.0, stop=False)
    restored = RunProgress("r", 2)
    restored.restore(progress.snapshot())
    assert restored.resumed == 30
    assert restored.views[0].seq == 0 and restored.views[0].pod == "b"
    assert fold_report(restored, BudgetBook(), report("a", 8, "running", {}), 4.0, stop=False)[
        "stop"
    ]


@st.composite
def pod_lives(draw: st.DrawFn) -> tuple[int, list[list[dict[str, int]]], int]:
    """Successive pods of one shard: each finishes some items (with random outcomes) per
    report; every pod but the last is killed part-way."""
    total = draw(st.integers(1, 300))
    pods = draw(st.integers(1, 5))
    steps = [draw(st.lists(st.integers(0, 40), max_size=8)) for _ in range(pods)]
    seed = draw(st.integers(0, 2**16))
    return total, [[{"n": n} for n in pod] for pod in steps], seed


@settings(max_examples=150, derandomize=True, deadline=None)
@given(pod_lives())
def test_folded_counts_never_decrease_and_end_at_the_last_pods_checkpoint(
    lives: tuple[int, list[list[dict[str, int]]], int],
) -> None:
    total, pods, seed = lives
    rng = random.Random(seed)
    progress, book = RunProgress("r", 1, expected_total=total), BudgetBook()
    in_flight: list[ReportWire] = []
    seen: list[ItemCounts] = []
    calls: list[int] = [0]

    def deliver(one: ReportWire, now: float) -> dict[str, object]:
        reply = fold_report(progress, book, one, now, stop=False)
        counts = progress.items()
        if seen:
            before = seen[-1]
            for field in ("synced", "unchanged", "failed", "total"):
                assert getattr(counts, field) >= getattr(before, field), (field, before, counts)
            assert counts.total - counts.remaining >= before.total - before.remaining
        seen.append(counts)
        calls.append(progress.cost().vendor_calls)  # counters of a pod's reports, too
        assert calls[-1] >= calls[-2]
        return dict(reply)

    def network(now: float, *, drain: bool) -> None:
        # Deliver a random part of what is in flight, in random order, some twice.
        rng.shuffle(in_flight)
        keep = [] if drain else in_flight[: rng.randint(0, len(in_flight))]
        for one in in_flight[len(keep) :]:
            deliver(one, now)
            if rng.random() < 0.2:
                keep.append(one)  # a duplicate, delivered again later
        in_flight[:] = keep

    now = 0.0
    final: dict[str, int] = {}
    for index, steps in enumerate(pods):
        last = index == len(pods) - 1
        pod = f"pod-{index}"
        now += 1
        hello = report(pod, 1, "starting", empty(), total=total)  # as the engine sends it
        resume = deliver(hello, now)["resume"]
        counts: Counter[str] = Counter(resume["counts"] if resume else {})  # type: ignore[index]
        for seq, step in enumerate([*steps, {"n": total}] if last else steps, start=1):
            left = total - sum(counts.values())
            for _ in range(min(step["n"], left)):
                counts[rng.choice(OUTCOMES)] += 1
            done = last and sum(counts.values()) == total
            state: ShardState = "done" if done else "running"
            in_flight.append(report(pod, seq, state, dict(counts), total=total))
            now += 0.5
            network(now, drain=False)
            if done:
                final = dict(counts)
                break
    network(now + 1, drain=True)
    end = progress.items()
    assert {k: v for k, v in final.items() if v} == {
        k: v
        for k, v in {"synced": end.synced, "unchanged": end.unchanged, "failed": end.failed}.items()
        if v
    }
    assert end.remaining == 0 and end.total == total
    assert progress.finished, "a late report took the shard out of done"
    assert final_phase(end, max_item_failures=total).reason is not Reason.ACCOUNTING_ERROR


# --- the final-phase rule ------------------------------------------------------------------


def counts(total: int, remaining: int = 0, **outcomes: int) -> ItemCounts:
    return ItemCounts(total=total, remaining=remaining, **outcomes)


@pytest.mark.parametrize(
    ("items", "max_failures", "phase", "reason", "says"),
    [
        (counts(100, synced=100), 0, Phase.SUCCEEDED, Reason.SUCCEEDED, "100 items in sync"),
        (counts(10, synced=4, unchanged=3, fresh=2, stale=1), 0, Phase.SUCCEEDED,
         Reason.SUCCEEDED, "10 items"),
        (counts(100, synced=95, failed=5), 10, Phase.PARTIALLY_SUCCEEDED,
         Reason.PARTIALLY_SUCCEEDED, "5 of 100"),
        (counts(100, synced=80, failed=20), 10, Phase.FAILED, Reason.TOO_MANY_FAILURES,
         "maxItemFailures=10"),
        (counts(300, failed=300), 1000, Phase.FAILED, Reason.ALL_ITEMS_FAILED, "all 300"),
        (counts(300, unchanged=1, failed=299), 1000, Phase.PARTIALLY_SUCCEEDED,
         Reason.PARTIALLY_SUCCEEDED, "299 of 300"),
        (counts(1000, remaining=25, synced=975), 0, Phase.FAILED, Reason.ACCOUNTING_ERROR,
         "25 remaining"),
        (counts(100, synced=90, failed=20), 1000, Phase.FAILED, Reason.ACCOUNTING_ERROR,
         "= 110"),
        (counts(0), 0, Phase.SUCCEEDED, Reason.SUCCEEDED, "0 items"),
    ],
)  # fmt: skip
def test_the_final_phase_rule(
    items: ItemCounts, max_failures: int, phase: Phase, reason: Reason, says: str
) -> None:
    verdict = final_phase(items, max_failures)
    assert (verdict.phase, verdict.reason) == (phase, reason)
    assert says in verdict.message


def test_accounting_errors_win_over_everything_and_name_the_counts() -> None:
    verdict = final_phase(counts(50, remaining=50, failed=0), 0)
    assert verdict.reason is Reason.ACCOUNTING_ERROR
    assert "total 50" in verdict.message and "50 remaining" in verdict.message


def test_too_many_failures_may_end_a_run_early() -> None:
    assert too_many_failures(counts(100, remaining=90, failed=10), 10) is None
    early = too_many_failures(counts(100, remaining=89, failed=11), 10)
    assert early is not None and early.reason is Reason.TOO_MANY_FAILURES
