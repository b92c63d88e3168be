"""The slot grid of a hard rate limit, and how its slots are divided: pure maths.

A vendor allows ``R`` requests per second, summed over every shard of every run that shares
its ``rateLimit.key``. Time is cut into slots: each wall-clock second holds ``N = floor(R)``
slots (for ``R < 1``: one slot every ``ceil(1/R)`` seconds), spread over the second with a
small guard at both ends. A coordinator hands each shard a *grant*: the residues
``j mod cycle`` it owns, valid for a time span. Both coordinators (``fleetsync run`` and the
controller) split residues with these functions and the worker's limiter
(:mod:`fleetsync.worker.ratelimit`) walks the same grid, so they live below both.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "GUARD_SECONDS",
    "RESERVABLE_SEATS",
    "SEATS",
    "Grant",
    "SlotClock",
    "apportion",
    "fallback_grant",
    "seat_cycle",
    "seat_residues",
    "split_pool",
    "split_residues",
    "spread",
]

# Every key's slots are dealt into SEATS seats: slot ``j`` belongs to seat ``j mod SEATS``
# (every cycle below is a multiple of SEATS, so a residue's seat is its slot's seat). Seats
# ``0 .. RESERVABLE_SEATS-1`` may be reserved by one holder each; the others are only ever
# leased, so at least half a key's rate stays leasable whatever was reserved.
SEATS = 16
RESERVABLE_SEATS = 8

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


def seat_cycle(rate: float) -> int:
    """The shortest cycle holding whole seconds of slots and whole seats."""
    return math.lcm(SlotClock(rate).per_second, SEATS)


def seat_residues(rate: float, seat: int) -> tuple[int, tuple[int, ...]]:
    """``(cycle, residues)`` of one seat: a reservation's grant."""
    cycle = seat_cycle(rate)
    return cycle, tuple(range(seat, cycle, SEATS))


def split_pool(
    rate: float,
    holders: Sequence[str],
    seats: Iterable[int],
    weights: Mapping[str, float] | None = None,
) -> tuple[int, dict[str, tuple[int, ...]]]:
    """Divide the slots of ``seats`` among ``holders``, each getting at least one: evenly
    (round-robin), or in proportion to ``weights`` (see :func:`apportion`), each holder's
    residues spread over the cycle.

    Returns ``(cycle, residues by holder)``; no residue outside ``seats`` is handed out.
    """
    pool = sorted(set(seats))
    base = seat_cycle(rate)
    if not holders or not pool:
        return base, dict.fromkeys(holders, ())
    per_base = base // SEATS * len(pool)
    cycle = base * math.ceil(len(holders) / per_base)
    member = set(pool)
    residues = [r for r in range(cycle) if r % SEATS in member]
    owned: dict[str, list[int]] = {h: [] for h in holders}
    if weights is None:
        for i, residue in enumerate(residues):
            owned[holders[i % len(holders)]].append(residue)
    else:
        counts = apportion(len(residues), {h: weights.get(h, 0.0) for h in holders})
        for residue, holder in zip(residues, spread(counts, len(residues)), strict=True):
            owned[holder].append(residue)
    return cycle, {h: tuple(r) for h, r in owned.items()}


def apportion(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """``total`` units over ``weights``' holders: one each, the rest in proportion to the
    weights by largest remainder (ties by name; all weights zero: evenly). Needs
    ``total >= len(weights)``."""
    names = sorted(weights)
    spare = total - len(names)
    clean = {h: w if math.isfinite(w) and w > 0 else 0.0 for h, w in weights.items()}
    weight_sum = sum(clean.values())
    if weight_sum <= 0:
        clean, weight_sum = dict.fromkeys(names, 1.0), float(len(names))
    quotas = {h: spare * clean[h] / weight_sum for h in names}
    counts = {h: 1 + math.floor(quotas[h]) for h in names}
    left = total - sum(counts.values())
    for h in sorted(names, key=lambda h: (math.floor(quotas[h]) - quotas[h], h))[:left]:
        counts[h] += 1
    return counts


def spread(counts: Mapping[str, int], total: int) -> list[str]:
    """An order of ``total`` turns in which each holder has ``counts[h]`` of them, evenly
    spaced: holder ``h``'s ``k``-th turn sits near ``(k + 1/2) * total / counts[h]``."""
    marks = sorted(
        ((k + 0.5) * total / count, name, k) for name, count in counts.items() for k in range(count)
    )
    return [name for _, name, _ in marks]
