"""What `fleetsync run` prints where no terminal is attached (logs, CI, pipes)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from fleetsync.api.constants import Phase
from fleetsync.api.v1alpha1.status import Cost, FailedItem, ItemCounts
from fleetsync.coordination.progress import RunProgress
from fleetsync.local.console import PLAIN_PROGRESS_EVERY, plain_progress, print_summary
from fleetsync.local.summary import RunSummary


def test_without_a_terminal_progress_is_one_line_every_ten_seconds() -> None:
    lines: list[str] = []
    update = plain_progress("plants", lines.append)
    progress = RunProgress("plants", 1, expected_total=1000)
    for second in range(0, 35):
        update(progress, float(second))
    assert len(lines) == 3  # at 10, 20 and 30 s: nothing is printed before the first period
    assert lines[0].startswith("plants: 0/1000 items") and "ETA" in lines[0]
    assert PLAIN_PROGRESS_EVERY == 10.0


def test_the_dead_letters_hint_names_the_real_manifest(tmp_path: Path) -> None:
    summary = RunSummary(
        run="plants", phase=Phase.PARTIALLY_SUCCEEDED, reason="PartiallySucceeded",
        message="9 of 10 failed",
        items=ItemCounts(total=10, synced=1, unchanged=0, fresh=0, stale=0, failed=9,
                         remaining=0),
        duration_seconds=1.0, cost=Cost(), vendors=[],
        failed_sample=[FailedItem(key=f"p-{i}", reason="boom", attempts=1) for i in range(9)],
        shards=1,
    )  # fmt: skip
    console = Console(record=True, width=200)
    manifest = tmp_path / "my jobs" / "plants.yaml"
    print_summary(summary, console, manifest=manifest)
    text = console.export_text()
    assert "MANIFEST" not in text
    assert f"fleetsync dead-letters '{manifest}'" in text
