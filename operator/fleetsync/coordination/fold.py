"""One report in, one reply out: what every coordinator does with a shard's report.

``fleetsync run``'s local coordinator and the controller both call :func:`fold_report`, so
the rules — a replaced pod is told to stop, a stale report changes nothing, a finished shard
gives its budget back, a starting pod is told where to resume — are written once.
"""

from __future__ import annotations

from fleetsync.api.progress import FINAL_STATES, ReplyWire, ReportWire
from fleetsync.coordination.budgets import BudgetBook
from fleetsync.coordination.progress import Intake, RunProgress

__all__ = ["fold_report", "holder_of", "release_run"]


def holder_of(run: str, shard: int, pod: str) -> str:
    """The budget holder a report speaks for: one per pod. A replacement is a new holder,
    so it never shares the slots of a predecessor that may still be alive."""
    return f"{run}/{shard}/{pod}"


def release_run(budgets: BudgetBook, run: str, now: float) -> None:
    """A run is gone (deleted, finished): every pod of it gives its budgets back."""
    budgets.release_all(f"{run}/", now)


def fold_report(
    progress: RunProgress,
    budgets: BudgetBook,
    report: ReportWire,
    now: float,
    *,
    stop: bool,
) -> ReplyWire:
    """Fold ``report`` into ``progress`` and renew (or release) its holder's budgets.

    ``stop`` asks the shard to checkpoint and exit (the run is being interrupted or
    suspended). A stale report (a ``seq`` already passed) is answered without grants: the
    shard keeps those of the newer reply it already has.
    """
    run, shard = report["run"], report["shard"]
    before = progress.views.get(shard)
    intake = progress.take(report, now)
    if intake is Intake.SUPERSEDED:
        return ReplyWire(grants={}, breakers={}, stop=True, resume=None)
    if before is not None and before.pod != report["pod"]:
        # Replaced: its leases stand until they lapse, but they are renewed no more.
        budgets.release(holder_of(run, shard, before.pod), now)
    holder = holder_of(run, shard, report["pod"])
    grants = {}
    if intake is Intake.TAKEN:
        if report["state"] in FINAL_STATES:
            # "done" comes after the shard's last request ended: its seat is free at once.
            budgets.release(holder, now, finished=report["state"] == "done")
        else:
            grants = budgets.renew(
                holder, report["wants"], now, backlog=report.get("backlog"), party=run
            )
    starting = report["state"] == "starting"
    reply = ReplyWire(
        grants=grants,
        breakers=progress.breaker_verdicts(),
        stop=stop,
        resume=progress.resume_for(report["shard"]) if starting else None,
    )
    if grants:
        reply["rates"] = {key: budgets.rate_of(key) for key in grants}
    return reply
