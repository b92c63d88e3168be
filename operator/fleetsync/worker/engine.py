"""One shard of one run: inventory → fetch → map → batched write, with a checkpoint.

The pipeline keeps memory bounded: the inventory is streamed, at most ``max_pending`` items
are between the reader and the sink at any time, and records leave in batches. Items are
routed to one queue per vendor so a slow or failing vendor never holds the others up.

Every item ends in exactly one :class:`~fleetsync.api.constants.ItemOutcome`, and only once
that outcome is durable (its batch or dead letter written) does the checkpoint mark it
final. A SIGTERM stops dispatching, lets in-flight items finish, flushes and reports: the
replacement resumes exactly where this shard stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fleetsync.api.constants import BreakerState, ItemOutcome
from fleetsync.api.progress import CostWire, FailedWire, ReplyWire, ReportWire, ShardState
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.coordination.protocol import Coordinator
from fleetsync.coordination.timing import LeaseTiming
from fleetsync.errors import (
    BreakerOpenError,
    PayloadError,
    PermanentError,
    ThrottledError,
    VendorError,
)
from fleetsync.metrics import WorkerMetrics
from fleetsync.sinks.base import DeadLetter, JSONValue, Record, RecordState, Sink, SinkCost
from fleetsync.worker.checkpoint import Checkpoint, CheckpointTracker
from fleetsync.worker.fetch import Fetcher
from fleetsync.worker.inventory import Item, iter_inventory, shard_of
from fleetsync.worker.mapping import Mapper, content_hash
from fleetsync.worker.ratelimit import Grant, SlotLimiter, fallback_grant
from fleetsync.worker.requests import RequestBuilder
from fleetsync.worker.retry import RetryPolicy
from fleetsync.worker.vendors import DEFAULT_VENDOR, VendorRuntime, limit_for

__all__ = ["EngineResult", "ShardEngine", "ShardPlan"]

log = logging.getLogger("fleetsync.worker")

_STATE_READ_BATCH = 100
_FAILED_SAMPLE = 20


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """Which shard this process is, and where its run's files are."""

    run: str
    shard: int
    shards: int
    pod: str
    base_dir: Path
    config_map_dir: Path | None = None
    max_pending: int = 2000
    report_interval: float = 1.0
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    final_report_seconds: float = 20.0  # within the pod's 30 s termination grace


@dataclass(slots=True)
class EngineResult:
    state: ShardState
    checkpoint: Checkpoint
    shard_total: int | None
    failed_sample: list[FailedWire] = field(default_factory=list)


@dataclass(slots=True)
class _Pending:
    index: int
    key: str
    item: Item
    state: RecordState | None = None


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
    ) -> None:
        self.spec = spec
        self.plan = plan
        self.sink = sink
        self.fetcher = fetcher
        self.requests = requests
        self.coordinator = coordinator
        self.tracker = CheckpointTracker(resume)
        self.retry = RetryPolicy.from_spec(spec.source.retry)
        self.mapper = Mapper(spec.source.mapping)
        self.rng = rng or random.Random()
        self.metrics = metrics
        self._sink_seen = SinkCost()
        self.vendors: dict[str, VendorRuntime] = {}
        self._limiters: dict[str, SlotLimiter] = {}
        self._queues: dict[str, asyncio.Queue[_Pending | None]] = {}
        self._dispatchers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Semaphore(plan.max_pending)
        self._stopping = asyncio.Event()
        self._wake_reporter = asyncio.Event()
        self._records: list[tuple[int, Record]] = []
        self._letters: list[tuple[int, DeadLetter]] = []
        self._write_slots = asyncio.Semaphore(sink.max_concurrent_writes)
        self._failed_sample: deque[FailedWire] = deque(maxlen=_FAILED_SAMPLE)
        self._shard_total: int | None = None
        self._seen = 0
        self._last_contact = time.time()
        self._fallback_since: float | None = None
        fresh = spec.write.fresh_for_seconds
        self._fresh_for = fresh
        self._read_state = spec.write.skip_unchanged or fresh is not None
        self.vendor_calls = 0
        self._report_seq = 0
        self._flush_stop = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------

    def stop(self) -> None:
        """Graceful interruption (SIGTERM): finish in-flight items, flush, report, exit 75."""
        self._stopping.set()

    async def run(self) -> EngineResult:
        reporter = asyncio.create_task(self._report_loop(), name="reporter")
        flusher = asyncio.create_task(self._flush_loop(), name="flusher")
        state: ShardState = "done"
        try:
            await self._read_inventory()
            await self._drain()
            if self._stopping.is_set():
                state = "interrupted"
        finally:
            # Never cancel the flusher: a batch it has cut and is writing would be written
            # (the sink's thread goes on) but never counted. Let it finish its round.
            self._flush_stop.set()
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            await flusher
            await self._flush(force=True)
        await self._final_report(state)
        return EngineResult(
            state=state,
            checkpoint=self.tracker.snapshot(),
            shard_total=self._shard_total,
            failed_sample=list(self._failed_sample),
        )

    async def _drain(self) -> None:
        for queue in self._queues.values():
            await queue.put(None)
        if self._dispatchers:
            await asyncio.gather(*self._dispatchers)
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    # --- inventory -> vendor queues ------------------------------------------------------

    async def _read_inventory(self) -> None:
        key_field = self.spec.fleet.key
        batch: list[_Pending] = []
        index = -1
        total = 0
        async for item in iter_inventory(
            self.spec.fleet.inventory,
            key=key_field,
            base_dir=self.plan.base_dir,
            http_client=self.fetcher.client,
            config_map_dir=self.plan.config_map_dir,
        ):
            key = item.get(key_field)
            key_text = "" if key is None else str(key)
            if shard_of(key_text, self.plan.shards) != self.plan.shard:
                continue
            index += 1
            total += 1
            self._seen = total
            if self.tracker.is_final(index):
                continue
            if self._stopping.is_set():
                break
            await self._room.acquire()
            pending = _Pending(index=index, key=key_text, item=item)
            if key is None:
                self._dead_letter(pending, f"item has no {key_field!r} field", attempts=0)
                continue
            if not self._read_state:
                self._dispatch(pending)
                continue
            batch.append(pending)
            if len(batch) >= _STATE_READ_BATCH:
                await self._dispatch_with_state(batch)
                batch = []
        else:
            self._shard_total = total
        if batch:
            await self._dispatch_with_state(batch)

    async def _dispatch_with_state(self, batch: list[_Pending]) -> None:
        states = await self.sink.read_state([p.key for p in batch])
        now = time.time()
        for pending in batch:
            pending.state = states.get(pending.key)
            synced_at = pending.state.synced_at if pending.state else None
            if self._fresh_for is not None and synced_at and now - synced_at < self._fresh_for:
                self._finish(pending.index, ItemOutcome.FRESH)
                continue
            self._dispatch(pending)

    def _vendor(self, item: Mapping[str, object]) -> VendorRuntime:
        by = self.spec.source.vendors.by if self.spec.source.vendors else None
        name = str(item.get(by) or DEFAULT_VENDOR) if by else DEFAULT_VENDOR
        runtime = self.vendors.get(name)
        if runtime is None:
            limiter = None
            key, _rate = limit_for(self.spec.source, name)
            if key is not None:
                if key not in self._limiters:
                    self._wake_reporter.set()  # ask for this key's budget now, not in a second
                limiter = self._limiters.setdefault(key, SlotLimiter())
            runtime = VendorRuntime(name, self.spec.source, limiter=limiter)
            self.vendors[name] = runtime
            self._queues[name] = asyncio.Queue()
            self._dispatchers.append(
                asyncio.create_task(self._dispatch_loop(runtime), name=f"vendor-{name}")
            )
        return runtime

    def _dispatch(self, pending: _Pending) -> None:
        vendor = self._vendor(pending.item)
        vendor.pending += 1
        self._queues[vendor.name].put_nowait(pending)

    async def _dispatch_loop(self, vendor: VendorRuntime) -> None:
        queue = self._queues[vendor.name]
        while (pending := await queue.get()) is not None:
            if self._stopping.is_set():
                vendor.pending -= 1
                self._room.release()  # not final: the replacement shard picks it up
                continue
            await vendor.gate.__aenter__()
            task = asyncio.create_task(self._process(vendor, pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # --- one item ------------------------------------------------------------------------

    async def _process(self, vendor: VendorRuntime, pending: _Pending) -> None:
        try:
            attributes, attempts = await self._fetch(vendor, pending)
        except BreakerOpenError as error:
            self._dead_letter(pending, str(error), attempts=0)
            return
        except (PermanentError, VendorError) as error:
            attempts = getattr(error, "attempts", 1)
            self._dead_letter(pending, f"{vendor.name}: {error}", attempts=attempts)
            return
        except Exception as error:  # a bug must fail this item, never hang the shard
            log.exception("item %s: unexpected error", pending.key)
            self._dead_letter(pending, f"internal error: {type(error).__name__}", attempts=1)
            return
        finally:
            await vendor.gate.__aexit__(None, None, None)
            vendor.pending -= 1
        digest = content_hash(attributes)
        if (
            self.spec.write.skip_unchanged
            and pending.state is not None
            and pending.state.content_hash == digest
        ):
            self._finish(pending.index, ItemOutcome.UNCHANGED)
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
        self._records.append((pending.index, record))
        if len(self._records) >= self.sink.max_batch_size:
            await self._flush()

    async def _fetch(
        self, vendor: VendorRuntime, pending: _Pending
    ) -> tuple[dict[str, JSONValue], int]:
        attempt = 0
        while True:
            attempt += 1
            if not vendor.breaker.allow():
                raise BreakerOpenError(f"{vendor.name}: circuit breaker open, item not fetched")
            request = await self.requests.build(vendor, pending.item)
            if vendor.limiter is not None:
                await vendor.limiter.acquire()
            vendor.stats.calls += 1
            self.vendor_calls += 1
            try:
                result = await self.fetcher.fetch(request.method, request.url, request.headers)
            except ThrottledError as error:
                self._observe(vendor, "429", None)
                vendor.stats.throttled += 1
                vendor.concurrency.on_throttle()
                retryable = self.retry.retryable(status=429)
                if not retryable or not self.retry.attempts_left(attempt):
                    error.attempts = attempt  # type: ignore[attr-defined]
                    raise
                await asyncio.sleep(
                    self.retry.delay(attempt, retry_after=error.retry_after, rng=self.rng)
                )
                continue
            except VendorError as error:
                code = {None: "timeout", -1: "connect"}.get(error.status, str(error.status))
                self._observe(vendor, code, None)
                vendor.stats.errors += 1
                refreshed = error.status == 401 and await self.requests.unauthorized(request)
                if refreshed and self.retry.attempts_left(attempt):
                    continue
                vendor.breaker.record(False)
                vendor.concurrency.on_error()
                retryable = self.retry.retryable(
                    status=error.status if error.status and error.status > 0 else None,
                    timeout=error.status is None,
                    connect=error.status == -1,
                )
                if not retryable or not self.retry.attempts_left(attempt):
                    error.attempts = attempt  # type: ignore[attr-defined]
                    raise
                await asyncio.sleep(self.retry.delay(attempt, rng=self.rng))
                continue
            self._observe(vendor, str(result.status), result.latency)
            vendor.breaker.record(True)
            vendor.concurrency.on_success(result.latency)
            vendor.stats.latencies.append(result.latency)
            try:
                return self.mapper.apply(self.mapper.decode(result.body), pending.item), attempt
            except PayloadError as error:
                error.attempts = attempt  # type: ignore[attr-defined]
                raise

    def _observe(self, vendor: VendorRuntime, code: str, latency: float | None) -> None:
        if self.metrics is not None:
            self.metrics.request(vendor.name, code, latency)

    # --- outcomes, batches, dead letters -------------------------------------------------

    def _finish(self, index: int, outcome: ItemOutcome) -> None:
        self.tracker.finish(index, outcome.value)
        self._room.release()
        if self.metrics is not None:
            self.metrics.item(outcome.value)

    def _dead_letter(self, pending: _Pending, reason: str, *, attempts: int) -> None:
        letter = DeadLetter(
            key=pending.key,
            reason=reason,
            attempts=attempts,
            item=pending.item,
            failed_at=time.time(),
        )
        self._letters.append((pending.index, letter))
        self._failed_sample.append(FailedWire(key=pending.key, reason=reason, attempts=attempts))

    async def _flush_loop(self) -> None:
        # Linger: a partial batch waits at most this long for company before it is written.
        while not self._flush_stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_stop.wait(), 0.05)
            await self._flush(force=True)

    def _cut(self, *, force: bool) -> list[list[tuple[int, Record]]]:
        size = self.sink.max_batch_size
        batches = []
        while self._records and (force or len(self._records) >= size):
            batches.append(self._records[:size])
            self._records = self._records[size:]
        return batches

    async def _flush(self, *, force: bool = False) -> None:
        batches = self._cut(force=force)
        letters, self._letters = self._letters, []
        if batches:
            await asyncio.gather(*(self._write(batch) for batch in batches))
        letters += self._letters  # items a failed sink write just dead-lettered
        self._letters = []
        if letters:
            async with self._write_slots:
                await self.sink.write_dead_letters(self.plan.run, [le for _, le in letters])
            for index, _ in letters:
                self._finish(index, ItemOutcome.FAILED)

    async def _write(self, batch: list[tuple[int, Record]]) -> None:
        async with self._write_slots:
            result = await self.sink.write_batch([record for _, record in batch])
        stale, failed = set(result.stale), result.failed
        for index, record in batch:
            if record.key in failed:
                pending = _Pending(index=index, key=record.key, item=dict(record.item))
                self._dead_letter(pending, f"sink: {failed[record.key]}", attempts=1)
            elif record.key in stale:
                self._finish(index, ItemOutcome.STALE)
            else:
                self._finish(index, ItemOutcome.SYNCED)

    # --- coordination --------------------------------------------------------------------

    async def _report_loop(self) -> None:
        while True:
            self._wake_reporter.clear()
            await self._send_report("running")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_reporter.wait(), self.plan.report_interval)

    def _update_gauges(self) -> None:
        if self.metrics is None:
            return
        for vendor in self.vendors.values():
            self.metrics.vendor_state(vendor.name, vendor.breaker.state, vendor.concurrency.limit)
        cost, seen = self.sink.cost, self._sink_seen
        self.metrics.sink_delta(
            type(self.sink).__name__.removesuffix("Sink").lower(),
            calls=cost.calls - seen.calls,
            write_units=cost.write_units - seen.write_units,
            unprocessed=cost.unprocessed_items - seen.unprocessed_items,
            throttles=cost.throttles - seen.throttles,
        )
        self._sink_seen = SinkCost(
            calls=cost.calls,
            write_units=cost.write_units,
            unprocessed_items=cost.unprocessed_items,
            throttles=cost.throttles,
        )

    def build_report(self, state: ShardState) -> ReportWire:
        self._update_gauges()
        cost = self.sink.cost
        wants: dict[str, float] = {}
        for vendor in self.vendors.values():
            # Keep wanting a vendor until the inventory is read to the end: a shard that
            # drops out between two batches forces a re-split, and a re-split must wait
            # for every lease of the old one to lapse (seconds of nobody sending).
            busy = vendor.pending > 0 or self._shard_total is None
            if vendor.limit_key is not None and vendor.rate is not None and busy:
                wants[vendor.limit_key] = vendor.rate
        self._report_seq += 1
        return ReportWire(
            run=self.plan.run,
            shard=self.plan.shard,
            pod=self.plan.pod,
            seq=self._report_seq,
            state=state,
            shardTotal=self._shard_total,
            seen=self._seen,
            checkpoint=self.tracker.snapshot(),
            vendors=[v.wire() for v in self.vendors.values()],
            cost=CostWire(
                vendorCalls=self.vendor_calls,
                sinkCalls=cost.calls,
                writeUnits=cost.write_units,
                readUnits=cost.read_units,
                unprocessedItems=cost.unprocessed_items,
                throttles=cost.throttles,
            ),
            failedSample=list(self._failed_sample),
            wants=wants,
        )

    async def _final_report(self, state: ShardState) -> None:
        """The last report carries the shard's final counts: if the coordinator is away
        (a controller restarting), retry for up to ``final_report_seconds`` rather than let
        those counts vanish. The sink holds the data either way."""
        deadline = time.monotonic() + self.plan.final_report_seconds
        delay = 0.5
        while True:
            if await self._send_report(state) or not self.coordinator.keeps_reports:
                return
            if time.monotonic() + delay > deadline:
                log.warning("final progress report not delivered; the sink is complete")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _send_report(self, state: ShardState) -> bool:
        try:
            reply = await self.coordinator.report(self.build_report(state))
        except Exception as error:  # a coordinator outage must never stop the shard
            log.warning("progress report failed: %s", type(error).__name__)
            reply = None
        now = time.time()
        if reply is not None:
            self._last_contact = now
            self._fallback_since = None
            self.apply_reply(reply)
            return True
        # No coordinator answer: once every grant anyone could hold has lapsed, use the safe
        # static share (rate / maxParallelism) so the fleet-wide sum still cannot exceed it.
        if self._fallback_since is None:
            self._fallback_since = now + self.plan.timing.fallback_after
        if now >= self._fallback_since:
            for key, limiter in self._limiters.items():
                if not any(g.until > now for g in limiter.grants):
                    rate = next(v.rate for v in self.vendors.values() if v.limit_key == key)
                    assert rate is not None
                    start = float(int(now) + 1)
                    limiter.set_grants(
                        [
                            fallback_grant(
                                rate,
                                self.plan.shard,
                                self.spec.sharding.max_parallelism,
                                start=start,
                            )
                        ]
                    )
        return False

    def apply_reply(self, reply: ReplyWire) -> None:
        for key, grants in reply["grants"].items():
            limiter = self._limiters.get(key)
            if limiter is not None:
                limiter.set_grants(
                    [
                        Grant(
                            rate=g["rate"],
                            cycle=g["cycle"],
                            residues=tuple(g["residues"]),
                            start=g["start"],
                            until=g["until"],
                        )
                        for g in grants
                    ]
                )
        for name, verdict in reply["breakers"].items():
            vendor = self.vendors.get(name)
            if vendor is not None:
                vendor.breaker.force(BreakerState(verdict) if verdict != "Closed" else None)
        if reply["stop"]:
            self.stop()


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
