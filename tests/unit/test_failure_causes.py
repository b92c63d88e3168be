"""Failures explain themselves (issue 13): redacted excerpts, causes counted exactly and
bounded, folded across shards and pods, and shown in status, events and the summary."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetsync.api.constants import Phase, Reason
from fleetsync.api.progress import (
    MAX_CAUSE_CHARS,
    MAX_CAUSES,
    OTHER_CAUSE,
    FailedWire,
    FailureSample,
    ReportWire,
    bound_causes,
    cause_of,
    count_cause,
    diverse_sample,
)
from fleetsync.api.v1alpha1.status import Cost, FailureCause, ItemCounts
from fleetsync.api.v1alpha1.syncjob import DeadLetterPolicy
from fleetsync.controller.observe import Observation, phase_event
from fleetsync.coordination.phase import final_phase, too_many_failures
from fleetsync.coordination.progress import RunProgress
from fleetsync.local.summary import RunSummary
from fleetsync.worker.failure_text import EXCERPT_CHARS, error_excerpt

# Credentials as vendors issue them: tokens, keys, base64.
TOKENS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/=",
    min_size=6,
    max_size=64,
)
FILLER = st.text(max_size=300)


def embedded(secret: str) -> st.SearchStrategy[str]:
    """The forms in which a vendor may echo a credential back."""
    return st.sampled_from(
        [secret, f"Bearer {secret}", json.dumps(secret)[1:-1], quote(secret, safe="")]
    )


@settings(max_examples=200, derandomize=True)
@given(secret=TOKENS, data=st.data())
def test_an_excerpt_never_holds_a_credential_the_request_sent(
    secret: str, data: st.DataObject
) -> None:
    parts = data.draw(st.lists(st.one_of(FILLER, embedded(secret)), min_size=1, max_size=8))
    # Sometimes far into the body, where whitespace folding would pull it into the excerpt,
    # or across the 4 KiB read limit.
    pad = data.draw(st.sampled_from([0, 4000, 4090, 4096 - len(secret) // 2]))
    body = (" " * pad + "".join(parts)).encode()
    excerpt = error_excerpt(body, [f"Bearer {secret}", secret])
    assert secret not in excerpt
    assert len(excerpt) <= EXCERPT_CHARS
    assert "\n" not in excerpt


def test_an_excerpt_is_the_start_of_the_body_on_one_line() -> None:
    body = b'{"error":\n  "plant p-1 not found",  "token": "abc123secret"}' + b"x" * 500
    excerpt = error_excerpt(body, ["Bearer abc123secret", "abc123secret"])
    assert excerpt.startswith('{"error": "plant p-1 not found", "token": "***"}xxx')
    assert excerpt.endswith("\N{HORIZONTAL ELLIPSIS}") and len(excerpt) == EXCERPT_CHARS


@pytest.mark.parametrize(
    ("reason", "cause"),
    [
        ('sungrow: HTTP 503: {"id": "p-17", "error": "down"}', "sungrow: HTTP 503"),
        ("sungrow: HTTP 503 (vendor down past maxOutageSeconds 20s)", "sungrow: HTTP 503"),
        ("sungrow: connection refused (127.0.0.1:9)", "sungrow: connection refused"),
        (
            "sungrow: connection refused (127.0.0.1:9) (vendor down past maxOutageSeconds 5s)",
            "sungrow: connection refused",
        ),
        ("sungrow: timeout after 10 s without a complete response", None),
        ("huawei: invalid JSON at byte 17: Expecting value", "huawei: invalid JSON"),
        ("huawei: mapping power_kw: $.data.power matched nothing", "huawei: mapping power_kw"),
        ("sink: SinkError: postgres plants: write: deadlock detected", "sink: SinkError"),
        ("item has no 'id' field", None),
        ("internal error: KeyError", None),
    ],
)
def test_a_cause_is_the_reason_without_its_per_item_details(reason: str, cause: str | None) -> None:
    expected = cause or ": ".join(reason.split(": ")[:2])
    assert cause_of(reason) == expected


@settings(max_examples=100, derandomize=True)
@given(st.lists(st.text(max_size=400), max_size=300))
def test_cause_counts_are_exact_and_bounded(reasons: list[str]) -> None:
    counts: dict[str, int] = {}
    for reason in reasons:
        count_cause(counts, cause_of(reason))
    assert sum(counts.values()) == len(reasons)
    assert len(counts) <= MAX_CAUSES + 1
    assert all(len(cause) <= MAX_CAUSE_CHARS for cause in counts)
    trimmed = bound_causes(counts, 3)
    assert sum(trimmed.values()) == len(reasons) and len(trimmed) <= 4


def shard_report(shard: int, pod: str, seq: int, causes: dict[str, int]) -> ReportWire:
    return ReportWire(
        run="r", shard=shard, pod=pod, seq=seq, state="running", shardTotal=None, seen=0,
        checkpoint=None, vendors=[], failedSample=[], wants={}, causes=causes,
        cost={"vendorCalls": 0, "sinkCalls": 0, "writeUnits": 0.0, "readUnits": 0.0,
              "unprocessedItems": 0, "throttles": 0},
    )  # fmt: skip


def test_causes_fold_over_shards_and_replaced_pods_and_survive_a_restart() -> None:
    progress = RunProgress("r", 2)
    progress.take(shard_report(0, "a", 1, {"s: HTTP 503": 5}), now=1)
    progress.take(shard_report(0, "a", 2, {"s: HTTP 503": 7, "s: connection refused": 1}), 2)
    progress.take({**shard_report(0, "b", 1, {}), "state": "starting"}, now=3)  # replaced
    progress.take(shard_report(0, "b", 2, {"s: HTTP 503": 2}), now=4)
    progress.take(shard_report(1, "c", 1, {"h: HTTP 500": 30}), now=5)
    expected = [
        FailureCause(cause="h: HTTP 500", count=30),
        FailureCause(cause="s: HTTP 503", count=9),
        FailureCause(cause="s: connection refused", count=1),
    ]
    assert progress.failure_causes() == expected
    restored = RunProgress("r", 2)
    restored.restore(json.loads(json.dumps(progress.snapshot())))
    assert restored.failure_causes() == expected


def test_a_snapshot_keeps_few_causes_per_shard_and_every_count() -> None:
    progress = RunProgress("r", 1)
    causes = {f"v{i}: HTTP 5{i:02d}": i + 1 for i in range(MAX_CAUSES)}
    progress.take(shard_report(0, "a", 1, causes), now=1)
    snapshot = progress.snapshot()
    kept = snapshot["views"]["0"]["report"]["causes"]
    assert len(kept) <= 9 and sum(kept.values()) == sum(causes.values())
    assert len(json.dumps(kept)) < 1200  # per shard, in the controller's ConfigMap
    restored = RunProgress("r", 1)
    restored.restore(snapshot)
    assert sum(c.count for c in restored.failure_causes()) == sum(causes.values())
    assert restored.failure_causes()[-1].cause == OTHER_CAUSE


def test_a_failing_shards_error_is_the_runs_last_error() -> None:
    progress = RunProgress("r", 2)
    progress.take({**shard_report(0, "a", 1, {}), "error": "spec.sink.postgres: down"}, now=5)
    progress.take(shard_report(1, "b", 1, {}), now=6)
    assert progress.last_error() == "spec.sink.postgres: down"


def items(total: int, failed: int) -> ItemCounts:
    return ItemCounts(total=total, synced=total - failed, failed=failed)


@pytest.mark.parametrize(
    ("counts", "percent", "phase"),
    [
        (items(100, 5), 5.0, Phase.PARTIALLY_SUCCEEDED),  # exactly 5 %: within
        (items(100, 6), 5.0, Phase.FAILED),
        (items(100_000, 999), 1.0, Phase.PARTIALLY_SUCCEEDED),
        (items(100_000, 1001), 1.0, Phase.FAILED),
        (items(100, 1), 0.0, Phase.FAILED),
        (items(100, 0), 0.0, Phase.SUCCEEDED),
        (items(100, 50), None, Phase.PARTIALLY_SUCCEEDED),  # unset: the count alone
    ],
)
def test_max_item_failure_percent_fails_a_run_past_its_share(
    counts: ItemCounts, percent: float | None, phase: Phase
) -> None:
    policy = DeadLetterPolicy(max_item_failures=10**9, max_item_failure_percent=percent)
    verdict = final_phase(counts, policy)
    assert verdict.phase is phase, verdict
    if phase is Phase.FAILED:
        assert verdict.reason is Reason.TOO_MANY_FAILURES
        assert "maxItemFailurePercent" in verdict.message


def test_the_percentage_waits_for_the_final_total() -> None:
    # Mid-run, ten of the first twenty failed: the total may grow, so no verdict yet.
    running = ItemCounts(total=20, synced=10, failed=10)
    policy = DeadLetterPolicy(max_item_failure_percent=1.0)
    assert too_many_failures(running, policy) is None
    assert too_many_failures(running, policy, finished=True) is not None


def test_a_run_ending_with_failures_says_them_by_cause_in_a_warning() -> None:
    observation = Observation(
        Phase.PARTIALLY_SUCCEEDED, Reason.PARTIALLY_SUCCEEDED, "984 of 3000 failed", True
    )
    status = {"failedItems": {"causes": [{"cause": "sungrow: connection refused", "count": 984}]}}
    message, warning = phase_event(observation, status)
    assert warning
    assert message.endswith(
        "failed items by cause: 984 \N{MULTIPLICATION SIGN} sungrow: connection refused"
    )
    running = Observation(Phase.RUNNING, Reason.RUNNING, "2 shard pods running")
    assert phase_event(running, status) == ("Running: 2 shard pods running", False)


def test_the_summary_shows_exact_counts_by_cause_with_an_example() -> None:
    summary = RunSummary(
        run="r", phase=Phase.PARTIALLY_SUCCEEDED, reason="PartiallySucceeded", message="",
        items=ItemCounts(total=1000, synced=16, failed=984), duration_seconds=1.0,
        cost=Cost(),
        vendors=[], failed_sample=[], shards=1,
        causes=[FailureCause(cause="sungrow: connection refused", count=984)],
    )  # fmt: skip
    assert summary.failure_lines() == [
        "failed 984, by cause:",
        "  984 \N{MULTIPLICATION SIGN} sungrow: connection refused",
    ]
    wire = summary.to_json()["failedItems"]
    assert isinstance(wire, dict)
    assert wire["causes"] == [{"cause": "sungrow: connection refused", "count": 984}]


# Failures as they come: runs of one cause (a vendor down for a while), causes drawn from a few.
_failure_runs = st.lists(
    st.tuples(st.sampled_from([f"v{i}: HTTP 50{i % 10}" for i in range(25)]), st.integers(1, 30)),
    max_size=40,
)


def _failures(runs: list[tuple[str, int]], shard: int = 0) -> list[FailedWire]:
    out: list[FailedWire] = []
    for cause, n in runs:
        out += [
            FailedWire(key=f"p-{shard}-{len(out) + i}", reason=cause, attempts=1) for i in range(n)
        ]
    return out


@given(_failure_runs, st.integers(1, 20))
@settings(max_examples=300)
def test_the_failure_sample_keeps_each_cause_that_fits_and_the_latest(
    runs: list[tuple[str, int]], size: int
) -> None:
    failures = _failures(runs)
    sample = FailureSample(size)
    for failure in failures:
        sample.add(failure)
    kept = list(sample)
    assert len(kept) == min(size, len(failures))
    keys = [int(f["key"].rsplit("-", 1)[1]) for f in kept]
    assert keys == sorted(keys)  # in the order they failed
    if failures:
        assert kept[-1] == failures[-1]  # the latest is always there
    causes = {cause_of(f["reason"]) for f in failures}
    if len(causes) <= size:  # every cause seen has an example while they fit
        assert {cause_of(f["reason"]) for f in kept} == causes
    if len(causes) == 1:  # one cause: just the last ``size``, as a plain window
        assert kept == failures[-size:]


@given(st.lists(_failure_runs, max_size=4), st.integers(1, 20))
@settings(max_examples=300)
def test_shards_samples_merge_keeping_an_example_per_cause(
    shards: list[list[tuple[str, int]]], limit: int
) -> None:
    merged_in = [f for n, runs in enumerate(shards) for f in _failures(runs, n)[-20:]]
    merged = diverse_sample(merged_in, limit)
    assert len(merged) == min(limit, len(merged_in))
    positions = [merged_in.index(f) for f in merged]
    assert positions == sorted(positions)  # in order, none twice
    first_causes = list(dict.fromkeys(cause_of(f["reason"]) for f in merged_in))[:limit]
    assert set(first_causes) <= {cause_of(f["reason"]) for f in merged}
