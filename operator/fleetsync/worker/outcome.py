"""The shard's books: which items were read, and the one final outcome each of them reached.

An item is *read* when the inventory hands it to this shard (and a resumed checkpoint does
not already hold it) and *final* once its outcome is durable: its record or dead letter
written, or nothing to write (fresh, unchanged, stale). The checkpoint marks an item final
only then, so a replacement never skips an item whose write was lost, and re-fetches at
most what was between fetch and durable write. :meth:`Books.unfinished` is what a shard
must show as zero before it may say ``done``.

A kill (SIGKILL, a node lost) makes the replacement fetch again every item that was fetched
but not yet in a checkpoint the coordinator holds. The *window* bounds that: an item takes
a window slot before its fetch and gives it back only once its outcome is durable *and* a
report carrying it was acknowledged (at once when nobody keeps reports, or after the
coordinator has been silent for ``silence`` seconds, so an outage never stalls the shard).
The window is one sink batch, or the vendor concurrency maximum if that is larger.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleetsync.api.constants import ItemOutcome
from fleetsync.api.progress import FailedWire, FailureSample, count_cause
from fleetsync.sinks.base import RecordState
from fleetsync.worker.checkpoint import CheckpointTracker
from fleetsync.worker.inventory import Item

if TYPE_CHECKING:  # annotations only: a run without /metrics never imports prometheus_client
    from fleetsync.metrics import WorkerMetrics

__all__ = ["Books", "Pending"]

_FAILED_SAMPLE = 20


@dataclass(slots=True)
class Pending:
    """An item between the inventory and its outcome; ``index`` is its place in the shard's
    inventory stream (the checkpoint's numbering)."""

    index: int
    key: str
    item: Item
    state: RecordState | None = None


class Books:
    """Counts by outcome (in the checkpoint), the in-flight caps, and a sample of failures."""

    def __init__(
        self,
        tracker: CheckpointTracker,
        *,
        max_pending: int,
        metrics: WorkerMetrics | None,
        window: int | None = None,
        acknowledged_by_reports: bool = False,
    ) -> None:
        self.tracker = tracker
        self.room = asyncio.Semaphore(max_pending)
        self.metrics = metrics
        self.window = window
        self._window = asyncio.Semaphore(window) if window else None
        self._acknowledged_by_reports = acknowledged_by_reports
        self._windowed: set[int] = set()
        self._window_open = False
        self.unacknowledged = 0  # final items holding a window slot until a report is taken
        self.failed_sample = FailureSample(_FAILED_SAMPLE)
        self.causes: dict[str, int] = {}  # every failure by cause (bounded: api.progress)
        self.read = 0  # items admitted to this run (not already final by the checkpoint)
        self.finished = 0  # items of those that reached their outcome in this run
        self.released = 0  # items handed back unfinished (interrupted): a replacement's

    async def admit(self) -> None:
        """Wait for room below ``max_pending``, then count the item as read."""
        await self.room.acquire()
        self.read += 1

    async def enter_window(self, index: int) -> None:
        """Before an item's fetch: wait until few enough fetched items lack a checkpoint."""
        if self._window is not None and not self._window_open:
            await self._window.acquire()
            self._windowed.add(index)

    def leave_window(self, index: int) -> None:
        """The item waits for its vendor's breaker: give its slot to items that can go."""
        if index in self._windowed:
            self._windowed.discard(index)
            if self._window is not None and not self._window_open:
                self._window.release()

    def open_window(self) -> None:
        """Stop bounding re-fetches (the shard is ending without its sink): never wait."""
        if self._window is not None and not self._window_open:
            self._window_open = True
            for _ in range(self.window or 0):
                self._window.release()  # wakes every waiter

    def acknowledge(self, count: int) -> None:
        """A report carrying ``count`` more final items was taken: free their slots."""
        count = min(count, self.unacknowledged)
        self.unacknowledged -= count
        if self._window is not None:
            for _ in range(count):
                self._window.release()

    def finish(self, index: int, outcome: ItemOutcome) -> None:
        if self.tracker.is_final(index):
            return
        self.tracker.finish(index, outcome.value)
        self.finished += 1
        self.room.release()
        if index in self._windowed:
            self._windowed.discard(index)
            self.unacknowledged += 1
            if not self._acknowledged_by_reports:
                self.acknowledge(1)
        if self.metrics is not None:
            self.metrics.item(outcome.value)

    def release(self, index: int) -> None:
        """An admitted item left unfinished on purpose (stopping): not final, not lost."""
        self.released += 1
        self.room.release()
        if index in self._windowed:  # it waited for the window, then was not fetched
            self._windowed.discard(index)
            if self._window is not None:
                self._window.release()

    def sample_failure(self, key: str, reason: str, attempts: int) -> None:
        """An item is being dead-lettered: keep it in the sample, count it by cause. (Counted
        when its letter is queued: a letter the sink never takes, its shard failing, is
        fetched and counted again by the replacement.)"""
        cause = self.failed_sample.add(FailedWire(key=key, reason=reason, attempts=attempts))
        count_cause(self.causes, cause)

    @property
    def unfinished(self) -> int:
        """Items read but neither final nor handed back: must be 0 when the shard ends."""
        return self.read - self.finished - self.released
