"""The text summary of a run groups its failures by cause, with counts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetsync.api.constants import Phase
from fleetsync.api.v1alpha1.status import Cost, FailedItem, ItemCounts
from fleetsync.local.summary import TIMES, RunSummary, failure_causes

REFUSED = "sungrow: connection failed: ConnectError"
HTTP_503 = "huawei: HTTP 503"


def summary(failed: int, sample: list[FailedItem]) -> RunSummary:
    return RunSummary(
        run="plants",
        phase=Phase.PARTIALLY_SUCCEEDED if failed else Phase.SUCCEEDED,
        reason="",
        message="",
        items=ItemCounts(total=1000, synced=1000 - failed, failed=failed),
        duration_seconds=1.0,
        cost=Cost(),
        vendors=[],
        failed_sample=sample,
        shards=1,
    )


def items(reason: str, count: int, attempts: int = 1) -> list[FailedItem]:
    return [FailedItem(key=f"{reason}-{i}", reason=reason, attempts=attempts) for i in range(count)]


def test_failures_are_grouped_by_cause_most_frequent_first() -> None:
    sample = items(HTTP_503, 3) + items(REFUSED, 12, attempts=0)
    lines = summary(15, sample).failure_lines()
    assert lines == ["failed 15, by cause:", f"  12 {TIMES} {REFUSED}", f"  3 {TIMES} {HTTP_503}"]


def test_a_sample_smaller_than_the_failures_says_so() -> None:
    lines = summary(984, items(REFUSED, 20)).failure_lines()
    assert lines[0] == "failed 984; causes in a sample of 20:"
    assert lines[1:] == [f"  20 {TIMES} {REFUSED}"]


def test_no_failures_no_lines() -> None:
    assert summary(0, []).failure_lines() == []


@settings(max_examples=60, derandomize=True)
@given(st.lists(st.sampled_from([REFUSED, HTTP_503, "a: timeout", "b: HTTP 500"]), max_size=20))
def test_the_grouped_counts_add_up_to_the_sample(reasons: list[str]) -> None:
    sample = [FailedItem(key=str(i), reason=r, attempts=1) for i, r in enumerate(reasons)]
    causes = failure_causes(sample)
    assert sum(n for n, _ in causes) == len(sample)
    assert {reason for _, reason in causes} == set(reasons)
    assert [n for n, _ in causes] == sorted((n for n, _ in causes), reverse=True)
