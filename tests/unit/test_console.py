"""What `fleetsync run` prints where no terminal is attached (logs, CI, pipes)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fleetsync.api.constants import Phase
from fleetsync.api.v1alpha1.status import Cost, FailedItem, ItemCounts
from fleetsync.coordination.progress import RunProgress
from fleetsync.local.console import (
    PLAIN_PROGRESS_EVERY,
    plain_progress,
    print_summary,
    summary_lines,
)
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
    manifest = tmp_path / "my jobs" / "plants.yaml"
    text = "\n".join(summary_lines(summary, manifest=manifest))
    assert "MANIFEST" not in text
    assert f"fleetsync dead-letters '{manifest}'" in text


def summary(message: str = "10 items in sync") -> RunSummary:
    return RunSummary(
        run="plants", phase=Phase.SUCCEEDED, reason="Succeeded", message=message,
        items=ItemCounts(total=10, synced=10, unchanged=0, fresh=0, stale=0, failed=0,
                         remaining=0),
        duration_seconds=1.0, cost=Cost(), vendors=[], failed_sample=[], shards=1,
    )  # fmt: skip


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    out = io.StringIO()
    print_summary(summary(), out)
    assert out.getvalue().splitlines() == summary_lines(summary())
    assert out.getvalue().startswith("Succeeded plants: 10 items in sync in 1.00s")


def test_a_terminal_gets_the_phase_in_colour_and_a_message_is_never_markup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    out = Terminal()
    print_summary(summary("vendor said [bold]no[/bold] [red]"), out)
    text = out.getvalue()
    assert "\x1b[" in text.split("Succeeded")[0]  # the phase is styled
    assert "vendor said [bold]no[/bold] [red]" in text  # printed as it came, not as markup
