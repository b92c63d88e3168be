"""What ``fleetsync run`` shows: a live progress bar on a terminal, then a summary.

The bar goes to stderr and only to a terminal; stdout carries the summary alone, so with
``--output json`` its last line is one JSON object a script can parse. rich draws the bar
and colours the summary's phase on a terminal, and is imported only then: its import is
~25 ms of a run's start, a twentieth of a 500-item run, and a pipe gets plain text.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from fleetsync.api.constants import ExitCode, Phase, Reason
from fleetsync.coordination.progress import RunProgress
from fleetsync.local.runner import LocalRun, RunOptions
from fleetsync.local.summary import RunSummary, exit_code_for
from fleetsync.worker.loop import run_loop

__all__ = ["plain_progress", "print_summary", "run_with_console", "summary_lines"]


def is_terminal(stream: TextIO) -> bool:
    """Whether rich would take ``stream`` for a terminal; rich is asked (and imported) only
    if it could say yes: a tty, or ``TTY_COMPATIBLE=1`` or ``FORCE_COLOR`` set."""
    forced = os.environ.get("TTY_COMPATIBLE") == "1" or os.environ.get("FORCE_COLOR")
    if not forced and not stream.isatty():
        return False
    from rich.console import Console

    return Console(file=stream).is_terminal


def _describe(progress: RunProgress, elapsed: float) -> str:
    items = progress.items()
    done = items.total - items.remaining
    rate = done / elapsed if elapsed > 0 else 0.0
    opened = [v.name for v in progress.vendors() if v.breaker != "Closed"]
    breakers = f" · breaker open: {', '.join(opened)}" if opened else ""
    failed = f" · {items.failed} failed" if items.failed else ""
    return f"{rate:,.0f} items/s{failed}{breakers}"


PLAIN_PROGRESS_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal


def plain_progress(
    name: str, write: Callable[[str], object]
) -> Callable[[RunProgress, float], None]:
    """Progress for logs and pipes: one line every :data:`PLAIN_PROGRESS_EVERY` seconds
    (items, rate, ETA, failed), where a terminal would get the live bar."""
    last = [0.0]

    def update(progress: RunProgress, elapsed: float) -> None:
        if elapsed - last[0] < PLAIN_PROGRESS_EVERY:
            return
        last[0] = elapsed
        items = progress.items()
        done = items.total - items.remaining
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f"{items.remaining / rate:.0f}s" if rate > 0 else "unknown"
        write(
            f"{name}: {done}/{items.total} items, {rate:,.0f} items/s, ETA {eta}, "
            f"{items.failed} failed\n"
        )

    return update


async def _run(run: LocalRun) -> RunSummary:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, run.stop)
    return await run.run()


def run_with_console(options: RunOptions, *, output: str) -> int:
    run = LocalRun(options)
    run.prepare()
    if run.spec is not None and run.spec.sink is None:
        sqlite = run.spec.resolved_sink.sqlite
        assert sqlite is not None
        where = options.manifest.parent / sqlite.path
        sys.stderr.write(
            f"note: spec.sink is not set: data goes to SQLite {where}, table {sqlite.table}\n"
        )
    if output == "text" and is_terminal(sys.stderr):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("[bold]{task.fields[name]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task: TaskID = bar.add_task("starting", name=run.name, total=None)

            def update(progress: RunProgress, elapsed: float) -> None:
                items = progress.items()
                bar.update(
                    task,
                    total=items.total or None,
                    completed=items.total - items.remaining,
                    description=_describe(progress, elapsed),
                )

            run.on_progress = update
            summary = run_loop(_run(run))
    else:
        run.on_progress = plain_progress(run.name, sys.stderr.write)
        summary = run_loop(_run(run))
    if run.coordinator is not None:
        _complete(summary, run.coordinator.progress)
    if output == "json":
        sys.stdout.write(summary.json_line() + "\n")
    else:
        print_summary(summary, sys.stdout, manifest=run.options.manifest)
    if summary.reason == Reason.INVALID_SPEC:
        return ExitCode.INVALID_CONFIG
    return exit_code_for(summary.phase)


def _complete(summary: RunSummary, progress: RunProgress) -> None:
    """What the summary may lack from the shards' reports: the failures by cause, and on a
    failed run the error a shard reported (a worker process's own account of it)."""
    if summary.causes is None:
        summary.causes = progress.failure_causes()
    error = progress.last_error()
    if summary.phase is Phase.FAILED and error and error not in summary.message:
        summary.message = f"{summary.message.split('; logs in')[0]}: {error}"


def print_summary(summary: RunSummary, out: TextIO, *, manifest: Path | None = None) -> None:
    """:func:`summary_lines` to ``out``; on a terminal the phase in colour."""
    lines = summary_lines(summary, manifest=manifest)
    if not is_terminal(out):
        out.write("".join(line + "\n" for line in lines))
        return
    from rich.console import Console
    from rich.text import Text

    # soft_wrap: one line per line, not rich's width; Text: a message is never markup.
    console = Console(file=out, soft_wrap=True, highlight=False)
    colour = {"Succeeded": "green", "PartiallySucceeded": "yellow"}.get(summary.phase, "red")
    phase, rest = lines[0].split(" ", 1)
    console.print(Text.assemble((phase, f"bold {colour}"), " " + rest))
    for line in lines[1:]:
        console.print(Text(line))


def summary_lines(summary: RunSummary, *, manifest: Path | None = None) -> list[str]:
    """The run's summary as plain lines: phase, counts, cost, vendors, failures."""
    items, cost = summary.items, summary.cost
    lines = [
        f"{summary.phase} {summary.run}: {summary.message} "
        f"in {summary.duration_seconds:.2f}s ({summary.shards} shard(s))",
        f"items: total {items.total}, synced {items.synced}, unchanged {items.unchanged}, "
        f"fresh {items.fresh}, stale {items.stale}, failed {items.failed}, "
        f"remaining {items.remaining}",
    ]
    if summary.resumed:
        lines.append(f"resumed: {summary.resumed} items were final before this run started")
    lines.append(
        f"cost: {cost.vendor_calls} vendor calls, {cost.sink_calls} sink calls, "
        f"{cost.write_units:g} write units"
    )
    if summary.vendors:
        rows: list[tuple[str, ...]] = [("vendor", "breaker", "calls", "errors", "429s", "p95 ms")]
        rows += [
            (v.name, v.breaker, str(v.calls), str(v.errors), str(v.throttled),
             "-" if v.p95_ms is None else f"{v.p95_ms:.0f}")
            for v in summary.vendors
        ]  # fmt: skip
        lines += _columns(rows)
    lines += summary.failure_lines()
    if items.failed > len(summary.failed_sample[:5]):
        where = shlex.quote(str(manifest)) if manifest is not None else "MANIFEST"
        lines.append(f"  … all dead letters: fleetsync dead-letters {where}")
    return lines


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as left-aligned columns two spaces apart (rich's Table without a box, less the
    import of rich for a few lines)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
