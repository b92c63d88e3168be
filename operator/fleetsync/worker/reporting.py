"""What a shard tells its coordinator, and what it does with the answer.

:func:`shard_report` is pure: the wire report from a snapshot of the shard's progress. The
:class:`Reporter` sends one every ``report_interval`` (sooner when woken), retries the final
one with the one backoff policy, and applies the reply: rate-limit grants (through the
budgets), fleet-wide breaker verdicts and a stop. The budgets themselves — per-key slot
limiters, and what to do while the coordinator is silent — are
:class:`fleetsync.worker.budget_client.BudgetClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleetsync.api.constants import BreakerState
from fleetsync.api.progress import (
    CheckpointWire,
    CostWire,
    FailedWire,
    ReportWire,
    ShardState,
    VendorWire,
)
from fleetsync.backoff import Backoff
from fleetsync.coordination.protocol import Coordinator
from fleetsync.sinks.base import Sink, SinkCost
from fleetsync.worker.budget_client import BudgetClient
from fleetsync.worker.plan import ShardPlan
from fleetsync.worker.vendors import VendorRuntime

if TYPE_CHECKING:  # annotations only: a run without /metrics never imports prometheus_client
    from fleetsync.metrics import WorkerMetrics

__all__ = [
    "REPORT_BACKOFF",
    "Reporter",
    "ShardProgress",
    "apply_verdicts",
    "backlog_of",
    "shard_report",
    "update_gauges",
    "wants_of",
]

log = logging.getLogger("fleetsync.worker")

# How a worker waits between tries to reach its coordinator (first contact, final report).
REPORT_BACKOFF = Backoff(base=0.5, cap=5.0, jitter="equal")


@dataclass(frozen=True, slots=True)
class ShardProgress:
    """The numbers a report carries, taken at one moment."""

    seen: int
    shard_total: int | None
    checkpoint: CheckpointWire | None
    vendor_calls: int = 0
    failed_sample: Sequence[FailedWire] = ()
    error: str | None = None
    causes: Mapping[str, int] | None = None  # failures by cause (api.progress.cause_of)


def wants_of(vendors: Iterable[VendorRuntime], *, inventory_read: bool) -> dict[str, float]:
    """Rate-limit keys this shard needs budget for, with their rates."""
    wants: dict[str, float] = {}
    for vendor in vendors:
        # Keep wanting a vendor until the inventory is read to the end: a shard that drops
        # out between two batches forces a re-split, and a re-split must wait for every
        # lease of the old one to lapse (seconds of nobody sending).
        busy = vendor.pending > 0 or not inventory_read
        if vendor.limit_key is not None and vendor.rate is not None and busy:
            wants[vendor.limit_key] = vendor.rate
    return wants


def backlog_of(vendors: Iterable[VendorRuntime], *, inventory_read: bool) -> dict[str, int]:
    """Items still to fetch per rate-limit key, once the inventory is read to the end (until
    then the shard cannot know; it says nothing)."""
    backlog: dict[str, int] = {}
    if not inventory_read:
        return backlog
    for vendor in vendors:
        if vendor.limit_key is not None and vendor.rate is not None:
            backlog[vendor.limit_key] = backlog.get(vendor.limit_key, 0) + vendor.pending
    return backlog


def shard_report(
    plan: ShardPlan,
    *,
    seq: int,
    state: ShardState,
    progress: ShardProgress,
    vendors: Sequence[VendorWire] = (),
    wants: Mapping[str, float] | None = None,
    backlog: Mapping[str, int] | None = None,
    cost: SinkCost | None = None,
) -> ReportWire:
    """The report of shard ``plan.shard`` in ``state``; a pure function of its arguments."""
    cost = cost or SinkCost()
    report = ReportWire(
        run=plan.run,
        shard=plan.shard,
        pod=plan.pod,
        seq=seq,
        state=state,
        shardTotal=progress.shard_total,
        seen=progress.seen,
        checkpoint=progress.checkpoint,
        vendors=list(vendors),
        cost=CostWire(
            vendorCalls=progress.vendor_calls,
            sinkCalls=cost.calls,
            writeUnits=cost.write_units,
            readUnits=cost.read_units,
            unprocessedItems=cost.unprocessed_items,
            throttles=cost.throttles,
        ),
        failedSample=list(progress.failed_sample),
        wants=dict(wants or {}),
    )
    if backlog:
        report["backlog"] = {key: n for key, n in backlog.items() if key in report["wants"]}
    if progress.error is not None:
        report["error"] = progress.error
    if progress.causes:
        report["causes"] = dict(progress.causes)
    return report


class Reporter:
    """Sends the shard's reports and applies the replies."""

    def __init__(
        self,
        plan: ShardPlan,
        *,
        coordinator: Coordinator,
        budgets: BudgetClient,
        snapshot: Callable[[ShardState], ReportWire],
        on_verdicts: Callable[[Mapping[str, str]], None],
        on_stop: Callable[[], None],
        on_delivered: Callable[[bool, float], None] = lambda delivered, now: None,
        rng: random.Random,
    ) -> None:
        self.plan = plan
        self.coordinator = coordinator
        self.budgets = budgets
        self._snapshot = snapshot
        self._on_verdicts = on_verdicts
        self._on_stop = on_stop
        self._on_delivered = on_delivered
        self._rng = rng
        self.wake = asyncio.Event()
        self._closing = False

    async def loop(self) -> None:
        while not self._closing:
            self.wake.clear()
            await self.send("running")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.plan.report_interval)

    def close(self) -> None:
        """End :meth:`loop` at its next turn. A flag, not only a cancel: ``wait_for``
        swallows a cancel that lands as its event fires (Python 3.11), and the loop would
        then report forever."""
        self._closing = True
        self.wake.set()

    async def final(self, state: ShardState) -> None:
        """The last report carries the shard's final counts: if the coordinator is away
        (a controller restarting), retry rather than let those counts vanish: for up to
        ``final_report_seconds`` when interrupted (the pod's grace period is running), up to
        ``done_report_seconds`` when the shard finished. The sink holds the data either way."""
        patience = (
            self.plan.final_report_seconds
            if state == "interrupted"
            else self.plan.done_report_seconds
        )
        deadline = time.monotonic() + patience
        attempt = 0
        while True:
            if await self.send(state) or not self.coordinator.keeps_reports:
                return
            attempt += 1
            delay = REPORT_BACKOFF.delay(attempt, self._rng)
            if time.monotonic() + delay > deadline:
                log.warning("final progress report not delivered; the sink is complete")
                return
            await asyncio.sleep(delay)

    async def send(self, state: ShardState) -> bool:
        try:
            reply = await self.coordinator.report(self._snapshot(state))
        except Exception as error:  # a coordinator outage must never stop the shard
            log.warning("progress report failed: %s", type(error).__name__)
            reply = None
        now = time.time()
        self._on_delivered(reply is not None, now)
        if reply is None:
            self.budgets.on_silence(now)
            return False
        self.budgets.on_reply(reply, now)
        self._on_verdicts(reply["breakers"])
        if reply["stop"]:
            self._on_stop()
        return True


def apply_verdicts(vendors: Mapping[str, VendorRuntime], verdicts: Mapping[str, str]) -> None:
    """Fleet-wide breaker verdicts: Open stops a vendor here too; Closed hands it back."""
    for name, verdict in verdicts.items():
        vendor = vendors.get(name)
        if vendor is not None:
            vendor.breaker.force(BreakerState(verdict) if verdict != "Closed" else None)


def update_gauges(
    metrics: WorkerMetrics | None,
    vendors: Iterable[VendorRuntime],
    sink: Sink,
    seen: SinkCost,
) -> SinkCost:
    """Push vendor states and the sink's cost since ``seen``; returns the new ``seen``."""
    cost = sink.cost
    if metrics is None:
        return seen
    for vendor in vendors:
        metrics.vendor_state(vendor.name, vendor.breaker.state, vendor.concurrency.limit)
    metrics.sink_delta(
        type(sink).__name__.removesuffix("Sink").lower(),
        calls=cost.calls - seen.calls,
        write_units=cost.write_units - seen.write_units,
        unprocessed=cost.unprocessed_items - seen.unprocessed_items,
        throttles=cost.throttles - seen.throttles,
    )
    return SinkCost(
        calls=cost.calls,
        write_units=cost.write_units,
        unprocessed_items=cost.unprocessed_items,
        throttles=cost.throttles,
    )
