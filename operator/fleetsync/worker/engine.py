"""One shard of one run, as a pipeline read top to bottom:

inventory (:meth:`ShardEngine._read_inventory`, with the sink's stored state when change
detection needs it) → dispatch (:mod:`~fleetsync.worker.dispatch`, one queue per vendor) →
attempts (:mod:`~fleetsync.worker.attempts`, the fetch/retry loop ending in a typed outcome)
→ batcher and sink (:mod:`~fleetsync.worker.batcher`, :mod:`~fleetsync.worker.writer`) →
reporting (:mod:`~fleetsync.worker.reporting`, a pure ``shard_report`` and the reporter).

Memory stays bounded: the inventory is streamed, at most ``max_pending`` items are between
the reader and the sink, and records leave in batches. Every item ends in exactly one
:class:`~fleetsync.api.constants.ItemOutcome`, and the checkpoint marks it final only once
that outcome is durable. A stop (SIGTERM) ends dispatching, lets in-flight items finish,
flushes and reports: the replacement resumes exactly where this shard stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fleetsync.api.constants import ItemOutcome
from fleetsync.api.progress import FailedWire, ReportWire, ShardState
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.coordination.protocol import Coordinator
from fleetsync.errors import SinkError
from fleetsync.sinks.base import Record, Sink, SinkCost
from fleetsync.worker.attempts import Attempts, FetchFailed, FetchOutcome
from fleetsync.worker.batcher import Entry
from fleetsync.worker.budget_client import BudgetClient
from fleetsync.worker.checkpoint import Checkpoint, CheckpointTracker
from fleetsync.worker.dispatch import Dispatcher
from fleetsync.worker.fetch import Fetcher
from fleetsync.worker.inventory import iter_inventory, shard_of
from fleetsync.worker.mapping import Mapper, content_hash
from fleetsync.worker.outcome import Books, Pending
from fleetsync.worker.plan import ShardPlan
from fleetsync.worker.ratelimit import SlotLimiter
from fleetsync.worker.reporting import (
    Reporter,
    ShardProgress,
    apply_verdicts,
    backlog_of,
    shard_report,
    update_gauges,
    wants_of,
)
from fleetsync.worker.requests import RequestBuilder
from fleetsync.worker.retry import RetryPolicy
from fleetsync.worker.vendors import VendorCount, VendorRuntime
from fleetsync.worker.writer import SinkWriter

if TYPE_CHECKING:  # annotations only: a run without /metrics never imports prometheus_client
    from fleetsync.metrics import WorkerMetrics

__all__ = ["EngineResult", "ShardEngine", "ShardPlan"]

log = logging.getLogger("fleetsync.worker")

_STATE_READ_BATCH = 100


@dataclass(slots=True)
class EngineResult:
    state: ShardState
    checkpoint: Checkpoint
    shard_total: int | None
    failed_sample: list[FailedWire] = field(default_factory=list)
    error: str | None = None


class ShardEngine:
    def __init__(
        self,
        spec: SyncJobSpec,
        plan: ShardPlan,
        *,
        sink: Sink,
        fetcher: Fetcher,
        requests: RequestBuilder,
        coordinator: Coordinator,
        resume: Checkpoint | None = None,
        rng: random.Random | None = None,
        metrics: WorkerMetrics | None = None,
        stop: asyncio.Event | None = None,
        report_seq: int = 0,
    ) -> None:
        self.spec = spec
        self.plan = plan
        self.sink = sink
        self.fetcher = fetcher
        self.metrics = metrics
        self.tracker = CheckpointTracker(resume)
        self.books = Books(
            self.tracker,
            max_pending=plan.max_pending,
            metrics=metrics,
            window=max(sink.max_batch_size, spec.source.concurrency.max),
            acknowledged_by_reports=coordinator.keeps_reports,
        )
        self._stopping = stop or asyncio.Event()
        rng = rng or random.Random()
        self.attempts = Attempts(
            fetcher=fetcher,
            requests=requests,
            mapper=Mapper(spec.source.mapping),
            retry=RetryPolicy.from_spec(spec.source.retry),
            rng=rng,
            metrics=metrics,
        )
        self.writer = SinkWriter(
            sink,
            run=plan.run,
            books=self.books,
            rng=rng,
            on_durable=self._on_durable,
            on_sink_down=self._sink_down,
        )
        self.budgets = BudgetClient(
            shard=plan.shard,
            max_parallelism=spec.sharding.max_parallelism,
            coordinated=coordinator.keeps_reports,
        )
        self._asked: set[str] = set()
        self.dispatcher = self._dispatcher()
        self.reporter = self._reporter(coordinator, rng)
        self._report_seq = report_seq
        self._covered = 0  # final items the report being sent carries to the coordinator
        self._last_delivered = time.time()
        self._error: str | None = None
        self._sink_seen = SinkCost()
        self._shard_total: int | None = None
        self._seen = 0
        fresh = spec.write.fresh_for_seconds
        self._fresh_for = fresh
        self._read_state = spec.write.skip_unchanged or fresh is not None

    def _dispatcher(self) -> Dispatcher:
        return Dispatcher(
            self.spec.source,
            limiter_for=self._limiter_for,
            fetch=lambda vendor, pending, resume: self.attempts.fetch(
                vendor, pending.item, resume=resume
            ),
            then=self._fetched,
            before_fetch=lambda pending: self.books.enter_window(pending.index),
            on_skip=lambda pending: self.books.release(pending.index),
            on_crash=self._crashed,
            stopping=self._stopping,
            on_defer=lambda pending: self.books.leave_window(pending.index),
        )

    def _reporter(self, coordinator: Coordinator, rng: random.Random) -> Reporter:
        return Reporter(
            self.plan,
            coordinator=coordinator,
            budgets=self.budgets,
            snapshot=self.build_report,
            on_verdicts=lambda verdicts: apply_verdicts(self.vendors, verdicts),
            on_stop=self.stop,
            on_delivered=self._delivered,
            rng=rng,
        )

    @property
    def vendors(self) -> Mapping[str, VendorRuntime]:
        return self.dispatcher.vendors

    @property
    def vendor_calls(self) -> int:
        return self.attempts.vendor_calls

    # --- lifecycle -----------------------------------------------------------------------

    def stop(self) -> None:
        """Graceful interruption (SIGTERM): finish in-flight items, flush, report, exit 75."""
        self._stopping.set()

    async def run(self) -> EngineResult:
        reporter = asyncio.create_task(self.reporter.loop(), name="reporter")
        flusher = asyncio.create_task(self.writer.flush_loop(), name="flusher")
        state: ShardState = "done"
        try:
            await self._read_inventory()
            await self.dispatcher.drain()
            if self._stopping.is_set():
                state = "interrupted"
        finally:
            # Never cancel the flusher: a batch it has cut and is writing would be written
            # (the sink's thread goes on) but never counted. Let it finish its round.
            self.writer.stop()
            self.reporter.close()
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            await flusher
            await self.writer.flush(force=True)
        if self._error is not None:
            state = "failed"  # the sink was unusable: say so, and why
        elif state == "done":
            self._error = self._books_error()
            state = "failed" if self._error else state
        await self.reporter.final(state)
        return EngineResult(
            state=state,
            checkpoint=self.tracker.snapshot(),
            shard_total=self._shard_total,
            failed_sample=list(self.books.failed_sample),
            error=self._error,
        )

    def _books_error(self) -> str | None:
        """Why the books do not balance (a shard must never say done with an unfinished
        item), or None when every item of the shard's inventory reached one outcome."""
        final = sum(self.tracker.counts.values())
        books = self.books
        if books.unfinished == 0 and final == self._shard_total:
            return None
        error = (
            f"AccountingError: shard {self.plan.shard} read {self._shard_total} items but "
            f"{final} reached an outcome ({books.read} read by this pod, {books.finished} "
            f"finished, {books.unfinished} unfinished)"
        )
        log.error("%s", error)
        return error

    # --- inventory -> dispatch -----------------------------------------------------------

    async def _read_inventory(self) -> None:
        key_field = self.spec.fleet.key
        batch: list[Pending] = []
        index = -1
        # Every shard reads the whole inventory, so each reaches the same verdict on the
        # number of vendors (a bound per run, ManifestError past it).
        vendors = VendorCount(self.spec.source)
        async for item in iter_inventory(
            self.spec.fleet.inventory,
            key=key_field,
            base_dir=self.plan.base_dir,
            http_client=lambda: self.fetcher.client,
            config_map_dir=self.plan.config_map_dir,
        ):
            vendors.observe(item)
            key = item.get(key_field)
            key_text = "" if key is None else str(key)
            if shard_of(key_text, self.plan.shards) != self.plan.shard:
                continue
            index += 1
            self._seen = index + 1
            if self.tracker.is_final(index):
                continue
            if self._stopping.is_set():
                break
            await self.books.admit()
            pending = Pending(index=index, key=key_text, item=item)
            if key is None:
                self.writer.dead_letter(pending, f"item has no {key_field!r} field", attempts=0)
            elif not self._read_state:
                self.dispatcher.dispatch(pending)
            else:
                batch.append(pending)
                if len(batch) >= _STATE_READ_BATCH:
                    await self._dispatch_with_state(batch)
                    batch = []
        else:
            self._shard_total = self._seen
        if batch:
            await self._dispatch_with_state(batch)

    async def _dispatch_with_state(self, batch: list[Pending]) -> None:
        try:
            states = await self.sink.read_state([p.key for p in batch])
        except SinkError as error:
            # The sink is unusable past its own retries: hand these items back unfinished
            # (a replacement's), let the ones in flight land, and end failed with a report.
            for pending in batch:
                self.books.release(pending.index)
            self._sink_down(f"stored state could not be read ({error})")
            return
        now = time.time()
        for pending in batch:
            pending.state = states.get(pending.key)
            synced_at = pending.state.synced_at if pending.state else None
            if self._fresh_for is not None and synced_at and now - synced_at < self._fresh_for:
                self.books.finish(pending.index, ItemOutcome.FRESH)
                continue
            self.dispatcher.dispatch(pending)

    # --- fetched -> record ---------------------------------------------------------------

    async def _fetched(self, pending: Pending, outcome: FetchOutcome) -> None:
        if isinstance(outcome, FetchFailed):
            self.writer.dead_letter(pending, outcome.reason, attempts=outcome.attempts)
            return
        attributes = outcome.attributes
        digest = content_hash(attributes)
        if (
            self.spec.write.skip_unchanged
            and pending.state is not None
            and pending.state.content_hash == digest
        ):
            self.books.finish(pending.index, ItemOutcome.UNCHANGED)
            return
        order_by, monotonic = self.spec.write.order_by, self.spec.write.monotonic_on
        record = Record(
            key=pending.key,
            attributes=attributes,
            item=pending.item,
            content_hash=digest,
            synced_at=time.time(),
            order_value=_orderable(attributes, pending.item, order_by),
            monotonic_value=_orderable(attributes, pending.item, monotonic),
        )
        stored = pending.state.monotonic_value if pending.state is not None else None
        if _older(record.monotonic_value, stored):
            # The sink's monotonic guard would refuse it anyway: count it stale, write nothing.
            self.books.finish(pending.index, ItemOutcome.STALE)
            return
        await self.writer.add(Entry(pending, record, attempts=outcome.attempts))

    def _crashed(self, pending: Pending, error: BaseException) -> None:
        reason = f"internal error: {type(error).__name__}"
        self.writer.dead_letter(pending, reason, attempts=1)

    # --- reporting -----------------------------------------------------------------------

    def _wake_reporter(self) -> None:
        self.reporter.wake.set()

    def _on_durable(self) -> None:
        # Half the refetch window waits for a checkpoint: report now, not in a second.
        window = self.books.window or 0
        if self.books.unacknowledged * 2 >= window:
            self.reporter.wake.set()

    def _sink_down(self, reason: str) -> None:
        if self._error is not None:
            return  # the first cause is the one worth reading
        self._error = (
            f"SinkError: {reason}; {self.books.unfinished} items left unfinished for a replacement"
        )
        log.error("%s", self._error)
        self.books.open_window()
        self.stop()

    def _limiter_for(self, key: str, rate: float) -> SlotLimiter:
        if key not in self.budgets.rates and key not in self._asked:
            self._asked.add(key)
            self._wake_reporter()  # ask for this key's budget now, not in a second
        return self.budgets.limiter_for(key, rate)

    def _delivered(self, delivered: bool, now: float) -> None:
        if delivered:
            self._last_delivered = now
        elif now - self._last_delivered < self.plan.timing.fallback_after:
            return  # a short outage: keep the window until the coordinator is back
        self.books.acknowledge(self._covered)

    def build_report(self, state: ShardState) -> ReportWire:
        self._sink_seen = update_gauges(
            self.metrics, self.vendors.values(), self.sink, self._sink_seen
        )
        self._report_seq += 1
        self._covered = self.books.unacknowledged
        progress = ShardProgress(
            seen=self._seen,
            shard_total=self._shard_total,
            checkpoint=self.tracker.snapshot(),
            vendor_calls=self.vendor_calls,
            failed_sample=list(self.books.failed_sample),
            error=self._error,
            causes=self.books.causes,
        )
        read = self._shard_total is not None
        return shard_report(
            self.plan,
            seq=self._report_seq,
            state=state,
            progress=progress,
            vendors=[
                v.wire(self.budgets.rates.get(v.limit_key) if v.limit_key else None)
                for v in self.vendors.values()
            ],
            wants=wants_of(self.vendors.values(), inventory_read=read),
            backlog=backlog_of(self.vendors.values(), inventory_read=read),
            cost=self.sink.cost,
        )


def _orderable(
    attributes: Mapping[str, object], item: Mapping[str, object], name: str | None
) -> str | float | int | None:
    if name is None:
        return None
    value = attributes.get(name, item.get(name))
    if isinstance(value, bool) or value is None:
        return None if value is None else int(value)
    if isinstance(value, int | float | str):
        return value
    return str(value)


def _older(value: str | float | int | None, stored: str | float | int | None) -> bool:
    """Whether ``value`` is certainly older than the stored ``monotonicOn`` value: both
    numbers or both text, strictly less. Anything else is left to the sink's own guard."""
    if value is None or stored is None:
        return False
    if isinstance(value, str) and isinstance(stored, str):
        return value < stored
    if isinstance(value, int | float) and isinstance(stored, int | float):
        return value < stored
    return False
