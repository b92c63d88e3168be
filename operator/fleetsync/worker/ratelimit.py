"""Hard vendor rate limits shared by many processes: time slots on the wall clock.

A vendor allows ``R`` requests per second, summed over every shard of every run that shares
its ``rateLimit.key``. A token bucket per shard cannot promise that sum: buckets in separate
processes burst at the same instant. So time itself is cut into slots. Each wall-clock second
holds ``N = floor(R)`` slots (for ``R < 1``: one slot every ``ceil(1/R)`` seconds), spread
over the second with a small guard at both ends so a request's network delay does not carry
it into the next second. Slots are numbered globally (slot ``j`` lives in second
``j // N``); a coordinator hands each shard a *grant*: the residues ``j mod cycle`` it owns,
valid for a time span. Grants of one key never share a residue and never overlap in time,
and a process uses each of its slots at most once and only inside the slot's own second —
so the vendor never sees more than ``N`` requests in one second, whatever the shards do.

Why not a library: aiolimiter, limits and pyrate-limiter all limit one process (or need a
shared Redis); none divides one budget between processes by a lease that lapses safely.
The slot grid and its split are pure maths in :mod:`fleetsync.coordination.slots`.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable, Sequence

from fleetsync.coordination.slots import (
    GUARD_SECONDS,
    Grant,
    SlotClock,
    fallback_grant,
    split_residues,
)

__all__ = [
    "BOOK_AHEAD",
    "GUARD_SECONDS",
    "Grant",
    "SlotClock",
    "SlotLimiter",
    "fallback_grant",
    "split_residues",
]


# How far ahead a task may book its slot: long enough that the next task finds its slot
# while this one sleeps (a shard's own slots are 1/rate-share apart), short enough that
# slots granted later are used within it.
BOOK_AHEAD = 0.5


class SlotLimiter:
    """Admits requests at the slots of the current grant; the grant is set from outside.

    ``acquire()`` reserves the next owned slot (synchronously, so concurrent tasks never
    reserve the same one), sleeps until it, and re-reserves if the task woke too late or the
    grant ran out. Without any grant the limiter waits: a shard must never guess a budget.

    Tasks book one after another (first come, first served) and never more than
    :data:`BOOK_AHEAD` seconds ahead. Booking every waiting task at once put the last of
    them seconds ahead on the grant of the moment, so slots that came later — a finished
    shard's, handed on; a bigger lease — went unused while those tasks slept: a shared
    25 req/s fell to 8-14 per second in the tail of bench/results.md section 3.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._grants: list[Grant] = []
        # Slot times booked by a waiting task (or used): each is booked once. A set, not a
        # "last booked" watermark: a watermark let tasks that booked reservation slots
        # seconds ahead (before a lease came) push every later booking past the lease's
        # end, so a shard sent at its reservation's pace only (45 % of a shared 25 req/s).
        self._booked: set[float] = set()
        self._booked_order: list[float] = []  # the same times as a heap, to forget past ones
        self._changed = asyncio.Event()
        self._turn = asyncio.Lock()  # FIFO: one task at a time looks for its slot
        self.used = 0

    @property
    def grants(self) -> tuple[Grant, ...]:
        return tuple(self._grants)

    def set_grants(self, grants: Sequence[Grant]) -> None:
        """Replace the grants (current and next); expired ones are dropped."""
        now = self._clock()
        self._grants = sorted((g for g in grants if g.until > now), key=lambda g: g.start)
        self._changed.set()

    def current_share(self) -> float:
        now = self._clock()
        return next((g.share for g in self._grants if g.start <= now < g.until), 0.0)

    def _earliest(self, now: float) -> tuple[float, float] | None:
        """The earliest owned slot not booked yet: (time, deadline), or None.

        Several grants may be valid at once (a lease and the shard's reservation): the
        earliest free slot of any of them is taken, so each is used at its own pace."""
        while self._booked_order and self._booked_order[0] < now - 2.0:  # long past: forget
            self._booked.discard(heapq.heappop(self._booked_order))
        best: tuple[float, float] | None = None
        for grant in self._grants:
            if grant.until <= now:
                continue
            clock = SlotClock(grant.rate)
            slot = grant.next_slot(clock.first_slot_at(max(now, grant.start)))
            # Grants of one grid compute a slot's time identically, so a booked slot is
            # recognised whichever grant offers it (never compare with an epsilon: at epoch
            # magnitudes, 1.8e9 + 1e-9 == 1.8e9 in floating point).
            while slot is not None and clock.time_of(slot) in self._booked:
                slot = grant.next_slot(slot + 1)
            if slot is None:
                continue
            at = clock.time_of(slot)
            if at < grant.until and (best is None or at < best[0]):
                best = at, clock.deadline_of(slot)
        return best

    def _reserve(self, now: float) -> tuple[float, float] | None:
        """Book the earliest free slot if it is at most :data:`BOOK_AHEAD` away."""
        best = self._earliest(now)
        if best is None or best[0] - now > BOOK_AHEAD:
            return None
        self._booked.add(best[0])
        heapq.heappush(self._booked_order, best[0])
        return best

    async def _wait_for_change(self, seconds: float) -> None:
        """Until the grants change, or ``seconds`` pass on this limiter's clock."""
        self._changed.clear()
        changed = asyncio.ensure_future(self._changed.wait())
        timer = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait((changed, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            timer.cancel()

    async def acquire(self) -> None:
        """Wait for a slot of our own. Each slot is used once, and only within its second."""
        while True:
            async with self._turn:
                while True:
                    now = self._clock()
                    reserved = self._reserve(now)
                    if reserved is not None:
                        break
                    # No slot within reach: wait for it to come within reach (or, without
                    # any grant, re-check once a second), or for new grants.
                    found = self._earliest(now)
                    await self._wait_for_change(
                        1.0 if found is None else found[0] - now - BOOK_AHEAD
                    )
            at, deadline = reserved
            # Never before the slot: a timer may fire up to its clock's resolution early.
            while (now := self._clock()) < at:
                await self._sleep(at - now)
            if now < deadline:
                self.used += 1
                return
            # Woke after the slot's second ended (a stalled loop): that slot is lost, not reused.
