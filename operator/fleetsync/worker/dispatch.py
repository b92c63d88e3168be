"""Items to vendors: one queue per vendor, so a slow or failing vendor never holds others up.

Each vendor's loop lets an item's first try in itself (the re-fetch window, then the vendor's
concurrency gate) and starts the item's task holding the gate slot, which the task gives back
when the fetch ends; then it yields one turn of the event loop, so a vendor gets one new
request per turn rather than a burst. The loop is the back-pressure: a vendor at its limit
makes it wait in the gate. (This runs once per request; the earlier way, a task per item
entering the gate on its own while the loop waited on an Event, cost ~8 µs more per item in
the dispatcher alone.) Retries enter again from the item's own task. Every item task is
collected: an exception that escapes one (a bug) is handed to ``on_crash`` so its item ends
in an outcome instead of vanishing.

An open breaker holds items back rather than failing them. An item waits for it
(:meth:`~fleetsync.worker.breaker.CircuitBreaker.wait_ready`) before it enters the gate, so
while the breaker is open the loop starts no further items (they stay queued), and an item
whose retry the breaker refused (:class:`~fleetsync.worker.attempts.Deferred`) leaves the
gate and the re-fetch window (``on_defer``) and waits too. When the outage outlasts
``maxOutageSeconds`` the item fails with the last real cause seen (its own attempt's, else
the vendor's) and the number of attempts it really made.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from fleetsync.api.v1alpha1.syncjob import Source
from fleetsync.worker.attempts import Deferred, FetchFailed, FetchOutcome
from fleetsync.worker.outcome import Pending
from fleetsync.worker.ratelimit import SlotLimiter
from fleetsync.worker.vendors import DEFAULT_VENDOR, VendorRuntime, limit_for

__all__ = ["Dispatcher"]

log = logging.getLogger("fleetsync.worker")

# (vendor, item, resumed from) -> how it ended, or Deferred: the breaker refused a retry
Fetch = Callable[[VendorRuntime, Pending, Deferred], Awaitable[FetchOutcome | Deferred]]
Then = Callable[[Pending, FetchOutcome], Awaitable[None]]


class Dispatcher:
    def __init__(
        self,
        source: Source,
        *,
        limiter_for: Callable[[str, float], SlotLimiter],
        fetch: Fetch,
        then: Then,
        before_fetch: Callable[[Pending], Awaitable[None]] | None = None,
        on_skip: Callable[[Pending], None],
        on_crash: Callable[[Pending, BaseException], None],
        stopping: asyncio.Event,
        on_defer: Callable[[Pending], None] = lambda pending: None,
    ) -> None:
        self._source = source
        self._limiter_for = limiter_for
        self._fetch = fetch
        self._then = then
        self._before_fetch = before_fetch
        self._on_skip = on_skip
        self._on_crash = on_crash
        self._on_defer = on_defer
        self._stopping = stopping
        self.vendors: dict[str, VendorRuntime] = {}
        self._queues: dict[str, asyncio.Queue[Pending | None]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._tasks: dict[asyncio.Task[None], Pending] = {}

    def vendor_of(self, item: Mapping[str, object]) -> VendorRuntime:
        by = self._source.vendors.by if self._source.vendors else None
        name = str(item.get(by) or DEFAULT_VENDOR) if by else DEFAULT_VENDOR
        runtime = self.vendors.get(name)
        if runtime is None:
            key, rate = limit_for(self._source, name)
            limiter = self._limiter_for(key, rate) if key is not None and rate is not None else None
            runtime = VendorRuntime(name, self._source, limiter=limiter)
            self.vendors[name] = runtime
            self._queues[name] = asyncio.Queue()
            self._loops.append(asyncio.create_task(self._loop(runtime), name=f"vendor-{name}"))
        return runtime

    def dispatch(self, pending: Pending) -> None:
        vendor = self.vendor_of(pending.item)
        vendor.pending += 1
        self._queues[vendor.name].put_nowait(pending)

    async def drain(self) -> None:
        """Let every queued item reach its task, and every task finish."""
        for queue in self._queues.values():
            await queue.put(None)
        if self._loops:
            await asyncio.gather(*self._loops)
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def _loop(self, vendor: VendorRuntime) -> None:
        queue = self._queues[vendor.name]
        while (pending := await queue.get()) is not None:
            if self._stopping.is_set():
                self._hand_back(vendor, pending)
                continue
            if not vendor.breaker.ready():
                # The breaker holds the vendor: the item waits for it in its own task, and
                # this loop (no further item starts) until it has entered the gate or ended.
                entered = asyncio.get_running_loop().create_future()
                self._start(vendor, pending, entered)
                await entered
                continue
            try:
                held = await self._enter(vendor, pending)
            except Exception as error:  # a bug: its item fails, the vendor's loop goes on
                vendor.pending -= 1
                self._on_crash(pending, error)
                continue
            except BaseException as error:  # cancelled: the item still ends in an outcome
                vendor.pending -= 1
                self._on_crash(pending, error)
                raise
            if held:
                self._start(vendor, pending, None)
                # One send per turn of the event loop: a gate with room for 100 would send
                # 100 at one instant, and a vendor that throttles bursts (a token bucket)
                # answered 429 to 2.7 % of calls against 0.8 % paced (bench/adaptive.py).
                # Paced is no slower: responses are read between sends.
                await asyncio.sleep(0)
            else:
                self._hand_back(vendor, pending)

    async def _enter(self, vendor: VendorRuntime, pending: Pending) -> bool:
        """An item's first try, let in by the loop itself: the re-fetch window, then the
        gate. False when the shard stopped meanwhile."""
        if self._before_fetch is not None:
            await self._before_fetch(pending)
        if self._stopping.is_set():
            return False
        await vendor.gate.acquire()
        vendor.fetching += 1
        return True

    def _hand_back(self, vendor: VendorRuntime, pending: Pending) -> None:
        vendor.pending -= 1
        self._on_skip(pending)  # not final: the replacement shard picks it up

    def _start(
        self, vendor: VendorRuntime, pending: Pending, entered: asyncio.Future[None] | None
    ) -> None:
        task = asyncio.create_task(self._item(vendor, pending, entered))
        self._tasks[task] = pending
        task.add_done_callback(self._collect)

    async def _item(
        self, vendor: VendorRuntime, pending: Pending, entered: asyncio.Future[None] | None
    ) -> None:
        """``entered`` None: the loop let the first try in (the task holds a gate slot);
        else the task waits for the breaker first and resolves ``entered`` once in the gate."""
        try:
            outcome = await self._attempts(vendor, pending, entered)
        finally:
            if entered is not None and not entered.done():
                entered.set_result(None)
            vendor.pending -= 1
        if outcome is None:
            self._on_skip(pending)  # stopped before it ended: not final, not lost
            return
        await self._then(pending, outcome)

    async def _attempts(
        self, vendor: VendorRuntime, pending: Pending, entered: asyncio.Future[None] | None
    ) -> FetchOutcome | None:
        """The item's outcome, waiting out the breaker; None when the shard stopped first."""
        resume = Deferred(0, None)
        held = entered is None
        while True:
            if not held:
                if not await vendor.breaker.wait_ready(self._stopping):
                    return None if self._stopping.is_set() else self._gave_up(vendor, resume)
                if not await self._enter(vendor, pending):
                    return None
                if entered is not None and not entered.done():
                    entered.set_result(None)
            held = False
            try:
                outcome = await self._fetch(vendor, pending, resume)
            finally:
                vendor.fetching -= 1
                vendor.gate.release()
            if not isinstance(outcome, Deferred):
                return outcome
            resume = outcome
            self._on_defer(pending)

    def _gave_up(self, vendor: VendorRuntime, resume: Deferred) -> FetchFailed:
        limit = self._source.circuit_breaker.max_outage_seconds
        cause = resume.last or vendor.last_failure
        if cause is None:  # opened by the fleet's verdict before this shard saw a failure
            cause = f"{vendor.name}: vendor failing on other shards"
        reason = f"{cause} (vendor down past maxOutageSeconds {limit:g}s)"
        return FetchFailed(reason, resume.attempts, "breaker")

    def _collect(self, task: asyncio.Task[None]) -> None:
        pending = self._tasks.pop(task)
        if task.cancelled():
            self._on_crash(pending, asyncio.CancelledError())
        elif (error := task.exception()) is not None:
            self._on_crash(pending, error)
