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
import contextlib
import time
from collections.abc import Callable, Sequence

from fleetsync.coordination.slots import (
    GUARD_SECONDS,
    Grant,
    SlotClock,
    fallback_grant,
    split_residues,
)

__all__ = [
    "GUARD_SECONDS",
    "Grant",
    "SlotClock",
    "SlotLimiter",
    "fallback_grant",
    "split_residues",
]


class SlotLimiter:
    """Admits requests at the slots of the current grant; the grant is set from outside.

    ``acquire()`` reserves the next owned slot (synchronously, so concurrent tasks never
    reserve the same one), sleeps until it, and re-reserves if the task woke too late or the
    grant ran out. Without any grant the limiter waits: a shard must never guess a budget.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._grants: list[Grant] = []
        self._last_time = 0.0
        self._changed = asyncio.Event()
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

    def _reserve(self, now: float) -> tuple[float, float] | None:
        """Reserve the earliest owned slot after the last one: returns (time, deadline).

        Several grants may be valid at once (a lease and the shard's reservation): the
        earliest slot of any of them is taken, so each is used at its own pace."""
        best: tuple[float, float] | None = None
        for grant in self._grants:
            if grant.until <= now:
                continue
            clock = SlotClock(grant.rate)
            not_before = max(now, grant.start, self._last_time)
            slot = grant.next_slot(clock.first_slot_at(not_before))
            # Strictly after the last reserved slot. (Compare slot times, never add an epsilon:
            # at epoch magnitudes, 1.8e9 + 1e-9 == 1.8e9 in floating point.)
            while slot is not None and clock.time_of(slot) <= self._last_time:
                slot = grant.next_slot(slot + 1)
            if slot is None:
                continue
            at = clock.time_of(slot)
            if at < grant.until and (best is None or at < best[0]):
                best = at, clock.deadline_of(slot)
        if best is not None:
            self._last_time = best[0]
        return best

    async def acquire(self) -> None:
        """Wait for a slot of our own. Each slot is used once, and only within its second."""
        while True:
            now = self._clock()
            reserved = self._reserve(now)
            if reserved is None:
                self._changed.clear()
                # Woken early by new grants; otherwise re-check once a second.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=1.0)
                continue
            at, deadline = reserved
            # Never before the slot: a timer may fire up to its clock's resolution early.
            while (now := self._clock()) < at:
                await self._sleep(at - now)  # type: ignore[misc]
            if now < deadline:
                self.used += 1
                return
            # Woke after the slot's second ended (a stalled loop): that slot is lost, not reused.
