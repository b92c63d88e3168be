"""Worker reports in, replies out: the controller's side of the report protocol.

``fold_report`` is the whole fold — progress, rate-limit budget, reply — in one function,
so it can be replaced by the shared one in ``fleetsync.coordination`` in one line.
Budget books are per namespace: a restarted controller cannot know the leases its
predecessor handed out, so a new book holds off its first grants (``BudgetBook.hold_off``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fleetsync.api.progress import FINAL_STATES, ReplyWire, ReportWire
from fleetsync.controller.cache import Key
from fleetsync.controller.progress_store import RunState
from fleetsync.coordination.budgets import BudgetBook
from fleetsync.coordination.timing import LeaseTiming

__all__ = ["ReportIntake", "fold_report"]

log = logging.getLogger("fleetsync.controller")


def fold_report(state: RunState, book: BudgetBook, report: ReportWire, now: float) -> ReplyWire:
    """Fold one report into the run's progress and the namespace's budgets; the reply."""
    holder = f"{report['run']}/{report['shard']}"
    if not state.progress.accept(report, now):
        return ReplyWire(grants={}, breakers={}, stop=True, resume=None)
    state.progress_dirty = True
    if report["state"] in FINAL_STATES:
        book.release(holder, now)
        grants = {}
    else:
        grants = book.renew(holder, report["wants"], now)
    resume = state.progress.resume_for(report["shard"]) if report["state"] == "starting" else None
    return ReplyWire(
        grants=grants,
        breakers=state.progress.breaker_verdicts(),
        stop=state.spec.suspend,
        resume=resume,
    )


class ReportIntake:
    """Accepts reports for the runs in ``runs``; ``changed`` wakes the reconcile loop."""

    def __init__(
        self, runs: dict[Key, RunState], lease: LeaseTiming, changed: Callable[[], None]
    ) -> None:
        self.runs = runs
        self.lease = lease
        self.changed = changed
        self.budgets: dict[str, BudgetBook] = {}

    def book(self, namespace: str, now: float) -> BudgetBook:
        book = self.budgets.get(namespace)
        if book is None:
            book = self.budgets[namespace] = BudgetBook(self.lease)
            book.hold_off(now)
        return book

    def accept(self, namespace: str, report: ReportWire) -> ReplyWire | None:
        """Fold one report in; None when the run is unknown here (yet)."""
        state = self.runs.get((namespace, report["run"]))
        if state is None or not state.loaded:
            return None
        now = time.time()
        before = state.progress.views.get(report["shard"])
        before_state = before.state if before else None
        reply = fold_report(state, self.book(namespace, now), report, now)
        after = state.progress.views.get(report["shard"])
        if after is not None and after.state != before_state:  # accepted, and moved on
            self._log_transition(namespace, report, before_state)
        return reply

    def _log_transition(self, namespace: str, report: ReportWire, before: str | None) -> None:
        log.info(
            "run %s/%s shard %d (%s): %s -> %s",
            namespace,
            report["run"],
            report["shard"],
            report["pod"],
            before,
            report["state"],
        )
        self.changed()

    def release(self, key: Key, shards: int) -> None:
        """A run is gone: its shards hold no budget any more."""
        book = self.budgets.get(key[0])
        if book is None:
            return
        now = time.time()
        for shard in range(shards):
            book.release(f"{key[1]}/{shard}", now)
