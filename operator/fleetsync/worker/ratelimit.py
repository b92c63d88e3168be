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
The pure split (:func:`split_residues`) lives here too so coordinator and tests share it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "Grant",
    "SlotClock",
    "SlotLimiter",
    "fallback_grant",
    "split_residues",
]

# Slots keep this far (seconds) from a second's edges so that loopback/network jitter and a
# late wake-up cannot move a request into the neighbouring second of the vendor's count.
GUARD_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class SlotClock:
    """The slot grid of one rate ``R``: where slot ``j`` sits on the wall clock."""

    rate: float

    @property
    def per_second(self) -> int:
        return max(1, math.floor(self.rate))

    @property
    def period(self) -> int:
        """Seconds between slot-bearing seconds: 1 for R >= 1, ceil(1/R) below."""
        return 1 if self.rate >= 1 else math.ceil(1 / self.rate)

    def second_of(self, slot: int) -> int:
        return (slot // self.per_second) * self.period

    def time_of(self, slot: int) -> float:
        n = self.per_second
        spacing = (1 - 2 * GUARD_SECONDS) / n
        return self.second_of(slot) + GUARD_SECONDS + (slot % n) * spacing

    def deadline_of(self, slot: int) -> float:
        """After this a slot may no longer be used (its second is ending)."""
        return self.second_of(slot) + 1 - GUARD_SECONDS

    def first_slot_at(self, when: float) -> int:
        """The first slot whose time is >= ``when``."""
        n = self.per_second
        second_index = math.floor(when) // self.period
        slot = second_index * n
        # Walk at most one second's worth of slots: N is small enough (<= R) for this to be cheap
        # in practice, and correctness beats a clever closed form here.
        while self.time_of(slot) < when:
            slot += 1
        return slot


@dataclass(frozen=True, slots=True)
class Grant:
    """The residues of the slot sequence one shard may use, in ``[start, until)``."""

    rate: float
    cycle: int
    residues: tuple[int, ...]  # sorted, each in [0, cycle)
    start: float  # wall-clock epoch seconds
    until: float

    @property
    def share(self) -> float:
        """Requests per second this grant allows on average."""
        clock = SlotClock(self.rate)
        return len(self.residues) / self.cycle * clock.per_second / clock.period

    def next_slot(self, at_least: int) -> int | None:
        """The first owned slot >= ``at_least`` (None when the grant owns nothing)."""
        if not self.residues:
            return None
        base, offset = divmod(at_least, self.cycle)
        i = bisect.bisect_left(self.residues, offset)
        if i == len(self.residues):
            return (base + 1) * self.cycle + self.residues[0]
        return base * self.cycle + self.residues[i]


def split_residues(rate: float, holders: Sequence[str]) -> tuple[int, dict[str, tuple[int, ...]]]:
    """Divide the slots of ``rate`` among ``holders`` as evenly as slots allow.

    Returns ``(cycle, residues by holder)``. The cycle is the smallest multiple of the
    per-second slot count that gives every holder at least one residue; residues are dealt
    round-robin so each holder's slots are spread evenly over the cycle.
    """
    clock = SlotClock(rate)
    if not holders:
        return clock.per_second, {}
    cycle = clock.per_second * math.ceil(len(holders) / clock.per_second)
    owned: dict[str, list[int]] = {h: [] for h in holders}
    for residue in range(cycle):
        owned[holders[residue % len(holders)]].append(residue)
    return cycle, {h: tuple(r) for h, r in owned.items()}


def fallback_grant(rate: float, shard: int, max_parallelism: int, *, start: float) -> Grant:
    """The safe share a shard may use when its coordinator is gone: ``rate / maxParallelism``.

    Shard ``i`` owns residues ``i mod maxParallelism`` of a cycle of ``maxParallelism``
    seconds' slots, so up to ``maxParallelism`` shards of a run never share a slot.
    """
    clock = SlotClock(rate)
    cycle = clock.per_second * max_parallelism
    residues = tuple(range(shard % max_parallelism, cycle, max_parallelism))
    return Grant(rate=rate, cycle=cycle, residues=residues, start=start, until=math.inf)


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
        """Reserve the earliest owned slot after the last one: returns (time, deadline)."""
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
            if at < grant.until:
                self._last_time = at
                return at, clock.deadline_of(slot)
        return None

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
            if at > now:
                await self._sleep(at - now)  # type: ignore[misc]
            if self._clock() < deadline:
                self.used += 1
                return
            # Woke after the slot's second ended (a stalled loop): that slot is lost, not reused.
