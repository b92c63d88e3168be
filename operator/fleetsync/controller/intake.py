"""Worker reports in, replies out: the controller's side of the report protocol.

The fold itself — progress, rate-limit budget, reply — is
:func:`fleetsync.coordination.fold.fold_report`, the same function ``fleetsync run`` uses.
Budget books are per namespace. A controller that inherits runs in progress cannot know the
grants its predecessor handed out, so its book grants nothing until those have surely
lapsed (``BudgetBook.hold_off`` from the controller's start); a first start need not wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fleetsync.api.progress import ReplyWire, ReportWire
from fleetsync.controller.cache import Key
from fleetsync.controller.progress_parts import clip_report
from fleetsync.controller.progress_store import RunState
from fleetsync.coordination.budgets import BudgetBook
from fleetsync.coordination.fold import fold_report, release_run
from fleetsync.coordination.timing import LeaseTiming

__all__ = ["ReportIntake"]

log = logging.getLogger("fleetsync.controller")


class ReportIntake:
    """Accepts reports for the runs in ``runs``; ``changed`` wakes the reconcile loop."""

    def __init__(
        self,
        runs: dict[Key, RunState],
        lease: LeaseTiming,
        changed: Callable[[], None],
        *,
        started: float | None = None,
    ) -> None:
        self.runs = runs
        self.lease = lease
        self.changed = changed
        self.started = time.time() if started is None else started
        self.budgets: dict[str, BudgetBook] = {}

    def book(self, namespace: str, now: float) -> BudgetBook:
        book = self.budgets.get(namespace)
        if book is None:
            book = self.budgets[namespace] = BudgetBook(self.lease)
            if any(s.inherited for (ns, _), s in self.runs.items() if ns == namespace):
                book.hold_off(self.started)
        return book

    def accept(self, namespace: str, report: ReportWire) -> ReplyWire | None:
        """Fold one report in; None when the run is unknown here (yet)."""
        state = self.runs.get((namespace, report["run"]))
        if state is None or not state.loaded:
            return None
        now = time.time()
        report = clip_report(report)  # bounded texts: what status and the ConfigMaps keep
        before = state.progress.views.get(report["shard"])
        before_state = before.state if before else None
        reply = fold_report(
            state.progress, self.book(namespace, now), report, now, stop=state.spec.suspend
        )
        state.progress_dirty = True  # at worst one needless write, at most every interval
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

    def release(self, key: Key) -> None:
        """A run is gone: its pods hold no budget any more."""
        book = self.budgets.get(key[0])
        if book is not None:
            release_run(book, key[1], time.time())
