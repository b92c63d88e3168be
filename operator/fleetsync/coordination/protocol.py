"""What a shard asks of its coordinator, whoever that is.

The controller (over HTTP, :mod:`fleetsync.worker.coordination`), ``fleetsync run``'s
in-process coordinator, or nobody at all (:class:`NoCoordinator`, a standalone shard): the
engine talks to this protocol only.
"""

from __future__ import annotations

from typing import Protocol

from fleetsync.api.progress import ReplyWire, ReportWire

__all__ = ["Coordinator", "NoCoordinator"]


class Coordinator(Protocol):
    # False for a standalone shard: nobody keeps its reports, so a final one is not retried.
    keeps_reports: bool

    async def report(self, report: ReportWire) -> ReplyWire | None:
        """Send cumulative progress; the reply, or None when the coordinator did not take it."""

    async def aclose(self) -> None: ...


class NoCoordinator:
    """Nobody to ask: no budgets (the shard uses its fallback share), nothing kept."""

    keeps_reports = False

    async def report(self, report: ReportWire) -> ReplyWire | None:
        return None

    async def aclose(self) -> None:
        return None
