"""Lease each rate-limit key's slots to the shards that want them, never double-booking.

The promise: whatever mix of healthy, late, failing or restarted reporters, across every run
sharing a key through one coordinator, the vendor never sees more than the key's rate in a
second. The argument, in the terms of :mod:`fleetsync.coordination.slots`:

1. **One grid at a time.** A key's rate in force is the lowest any current holder declares
   (runs that disagree get the lowest; the reply's ``rates`` says so). A split or
   reservation at a new rate starts only after every grant at the old rate has lapsed, so
   no second mixes two grids; within one grid a second holds at most ``N = floor(R)`` slots.
   A new grid starts at a whole second; later splits of the same grid start as soon as
   the leases before them lapse, mid-second (slots are instants of the grid: a slot
   before the boundary belongs to the old split, one after it to the new). A key's first
   grid also starts mid-second when no grant the book no longer tracks can count in that
   second: it dropped no key in that second (a dropped key may come back at another
   rate), and is not held off and was not in that second.
2. **Leases never overlap in time.** Every key has at most one *split* in force: a division
   of its *pool* seats among holders, valid from ``start`` to ``until``. Holders renew by
   reporting; each renewal extends the split. When holders, rate or pool change, the next
   split starts only once every lease handed out under the current one has lapsed (at a
   whole second if the grid changes), even when a report is delayed or a holder is alive
   but unreachable.
3. **Reservations are disjoint from each other and from every lease.** Each holder is also
   given, with its lease, one *reserved seat* (of ``RESERVABLE_SEATS``, while any is free):
   a grant valid ``reservation_seconds`` past its last renewal. A holder that cannot reach
   the coordinator keeps sending at its reserved seat only — its leases lapse on their own —
   and nothing else: there is no static fallback share. A seat is reserved only by a split
   that leases none of it, for a start no earlier than that split's; every split made while
   a reservation has not lapsed leaves its seat out of the pool; a reservation whose holder
   is gone (timed out, released, or the grid changed) is no longer extended and its seat
   returns to the pool only after it has lapsed — except the seat of a holder that
   *finished*: it said so after its last request and sends nothing more, so nobody can use
   its grants and the seat returns at once (a new split still starts only after every lease
   of the current one, so the rest of the argument stands).
4. **A restarted coordinator** cannot know what its predecessor handed out — nor at which
   rate: a grid change may have been under way. It hands out nothing before
   ``reservation_seconds`` have passed, when every earlier grant has lapsed. Meanwhile each
   shard goes on with the reservation its predecessor renewed last.

So at any instant each slot has at most one valid grant, each holder's limiter uses a slot
at most once and only inside its second (:mod:`fleetsync.worker.ratelimit`): at most ``N``
requests per second. ``tests/unit/test_coordination_budgets.py`` drives this book with
random reporters (late, missing, restarted coordinator, shards joining and leaving, two
runs on one key) and counts every second.

The cost: for ``reservation_seconds`` after a coordinator restart only reservations are
used (at most half the rate, and none for holders beyond ``RESERVABLE_SEATS``); a
departed holder's seat is idle until its reservation lapses; a change of rate waits for the
old grid's reservations (at most ``reservation_seconds``), with leases of the old grid going
on meanwhile. Keys are shared within one coordinator: the controller's book per namespace,
or one ``fleetsync run``.

Work stays bounded however many keys and runs come and go (issue 14, item 5). A renewal
touches only the keys its holder wants or held before, not every key of the book. A key is
dropped once nothing about it can matter any more: no holder, and every grant handed out
under it (leases, reservations, pending splits already handed out) has lapsed — dropping it
then is the same as never having seen it. Keys nobody renews any more are found by a small
sweep on every call (the least recently visited ones first, a few at a time), so a key whose
last holder crashed expires too, about ``reservation_seconds`` after its last renewal.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fleetsync.api.progress import GrantWire
from fleetsync.coordination.slots import (
    RESERVABLE_SEATS,
    SEATS,
    SlotClock,
    apportion,
    seat_residues,
    split_pool,
    spread,
)
from fleetsync.coordination.timing import LeaseTiming

__all__ = ["BudgetBook"]

_ALL_SEATS = frozenset(range(SEATS))
_RESERVABLE = frozenset(range(RESERVABLE_SEATS))
# Each call visits at most this many keys nobody has visited for a lease (plus one per key
# the caller names): enough to keep up with keys going idle, bounded per call.
SWEEP_BATCH = 8
# A backlog weighs at most this much (a report may say anything; beyond this, all alike).
MAX_BACKLOG = 1_000_000_000
# Re-divide a split by backlog when its holders would finish this far apart (seconds, and
# fraction of the longest), at most once per REBALANCE_LEASES leases.
REBALANCE_SPREAD, REBALANCE_SHARE, REBALANCE_LEASES = 1.0, 0.1, 2


@dataclass(slots=True)
class _Split:
    rate: float
    cycle: int
    residues: dict[str, tuple[int, ...]]
    pool: frozenset[int]
    start: float
    until: float  # the latest lease end handed out under this split
    handed: bool = False  # has any holder been given a grant under it?


@dataclass(slots=True)
class _Reservation:
    holder: str
    seat: int
    rate: float
    start: float
    until: float
    ended: bool = False  # never extended again: its holder is gone or the grid changed


@dataclass(slots=True)
class _Key:
    current: _Split | None = None
    following: _Split | None = None
    last_seen: dict[str, float] = field(default_factory=dict)
    declared: dict[str, float] = field(default_factory=dict)  # holder -> rate it asks for
    # holder -> requests it still has to make under this key, when it knows (its inventory
    # read to the end); and the party (run) it belongs to: see BudgetBook._weights.
    backlog: dict[str, float] = field(default_factory=dict)
    party: dict[str, str] = field(default_factory=dict)
    balance_checked: float = -math.inf  # when BudgetBook._unbalanced last looked at it
    # Splits replaced after some holders were given them: those leases still stand (their
    # holders keep using them), and nothing new starts before they end.
    replaced: list[_Split] = field(default_factory=list)
    reserved: dict[str, _Reservation] = field(default_factory=dict)  # by holder
    ended: list[_Reservation] = field(default_factory=list)  # lapsing: seats still taken
    visited: float = 0.0  # when it was last advanced (the sweep visits the oldest first)
    # The rate of the grid its splits are made at (None: no split yet), and when that grid
    # began (a whole second, but for a key's first): from then on every grant of the key is
    # of that grid.
    grid: float | None = None
    grid_from: float = 0.0

    def rate(self) -> float | None:
        rates = [self.declared[h] for h in self.last_seen if h in self.declared]
        if rates:
            return min(rates)
        latest = self.following or self.current
        return latest.rate if latest else None

    def taken_seats(self) -> set[int]:
        return {r.seat for r in self.reserved.values()} | {r.seat for r in self.ended}

    def splits(self) -> list[_Split]:
        return [s for s in (self.current, self.following) if s is not None] + self.replaced

    def idle(self) -> bool:
        """No holder, and no grant of it may still be in use: forgetting it changes nothing.
        (Call after ``BudgetBook._advance``, which drops what has lapsed.)"""
        return not (
            self.last_seen
            or self.reserved
            or self.ended
            or self.replaced
            or self.current is not None
            or (self.following is not None and self.following.handed)
        )


class BudgetBook:
    def __init__(self, timing: LeaseTiming | None = None) -> None:
        self.timing = timing or LeaseTiming()
        self.lease = self.timing.lease_seconds
        self.holder_timeout = self.timing.holder_timeout
        # Least recently advanced first: the sweep's order.
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        self._held: dict[str, set[str]] = {}  # holder -> the keys it holds
        # A restarted coordinator cannot know the grants its predecessor gave: hand out
        # nothing that could overlap them before they have surely lapsed.
        self._not_before = 0.0
        self._reserve_not_before = 0.0
        # The first whole second no earlier grant (a dropped key's, or a predecessor's) can
        # have been valid in: a new key's first split may start mid-second from then on.
        self._clean_from = 0.0

    def hold_off(self, now: float) -> None:
        """Call once at start-up when an earlier coordinator may have handed out grants
        (runs were in progress): nothing is granted for ``reservation_seconds``. A first
        start with nothing in progress need not wait."""
        self._not_before = now + self.timing.reservation_seconds
        self._reserve_not_before = self._not_before
        self._clean_from = max(self._clean_from, float(math.ceil(self._not_before)))

    def renew(
        self,
        holder: str,
        wants: Mapping[str, float],
        now: float,
        *,
        backlog: Mapping[str, int] | None = None,
        party: str | None = None,
    ) -> dict[str, list[GrantWire]]:
        """``holder`` reports the keys it has work for; returns its grants (current and next
        lease, and its reservation). ``backlog``: the requests it still has to make per key,
        where it knows; ``party``: the run it belongs to (default: itself). Within a party,
        splits follow the backlogs, so that its holders finish together (see
        :meth:`_weights`); between parties they stay even per holder."""
        grants: dict[str, list[GrantWire]] = {}
        for key, rate in wants.items():
            state = self._keys.get(key)
            if state is None:
                state = self._keys[key] = _Key()
            state.last_seen[holder] = now
            state.declared[holder] = rate
            state.party[holder] = holder if party is None else party
            left = None if backlog is None else backlog.get(key)
            if left is None:
                state.backlog.pop(holder, None)
            else:
                state.backlog[holder] = float(min(max(0, left), MAX_BACKLOG))
        for key in self._held.get(holder, set()) - wants.keys():
            state = self._keys.get(key)
            if state is not None:
                self._forget(state, holder)
                self._visit(key, state, now)
        if wants:
            self._held[holder] = set(wants)
        else:
            self._held.pop(holder, None)
        for key in wants:
            state = self._keys[key]
            self._visit(key, state, now)
            grants[key] = self._grants_of(state, holder, now)
        self._sweep(now, SWEEP_BATCH + len(wants))
        return grants

    def release(self, holder: str, now: float, *, finished: bool = False) -> None:
        """``holder`` holds nothing any more. Its leases stand until they lapse, and so does
        its reservation — unless it ``finished``: it said so after its last request ended
        and will send none again (a shard reporting done), so its reserved seat returns to
        the pool at once rather than idle for ``reservation_seconds`` (the tail of a run
        whose shards finish one after another)."""
        for key in self._held.pop(holder, set()):
            state = self._keys.get(key)
            if state is not None:
                reservation = state.reserved.get(holder)
                party = state.party.get(holder, holder)
                self._forget(state, holder, finished=finished)
                if finished:
                    self._hand_on(state, holder, party, reservation, now)
                self._visit(key, state, now)
        self._sweep(now, SWEEP_BATCH)

    def _hand_on(
        self,
        state: _Key,
        holder: str,
        party: str,
        reservation: _Reservation | None,
        now: float,
    ) -> None:
        """A finished holder's slots go, in place, to the holders still in each split: its
        leased residues and its reserved seat's (same grid, outside any hold-off). Every
        other holder's slots stay where they were and the finished one uses none again, so
        no slot gains a second holder — and the split need not wait for its own end to be
        redivided (the tail of a run whose shards finish one after another). They go to
        the holders of its own party (run) if any is left, by backlog where all of them
        know theirs; else evenly to all."""
        seat_free = (
            reservation is not None
            and now >= self._reserve_not_before
            and all(r.seat != reservation.seat for r in state.ended)
        )
        for split in state.splits():
            freed = list(split.residues.pop(holder, ()))
            heirs = sorted(h for h in split.residues if h in state.last_seen)
            kin = [h for h in heirs if state.party.get(h, h) == party]
            heirs = kin or heirs
            if not heirs:
                continue
            if (
                seat_free
                and reservation is not None
                and reservation.rate == split.rate
                and reservation.seat not in split.pool
            ):
                split.pool = split.pool | {reservation.seat}
                freed += [r for r in range(split.cycle) if r % SEATS == reservation.seat]
            if not freed:
                continue
            owned = {h: list(split.residues[h]) for h in heirs}
            known = {h: state.backlog[h] for h in heirs if h in state.backlog}
            if kin and len(freed) >= len(heirs) and len(known) == len(heirs):
                order = spread(apportion(len(freed), known), len(freed))
            else:
                order = [heirs[i % len(heirs)] for i in range(len(freed))]
            for residue, heir in zip(sorted(freed), order, strict=True):
                owned[heir].append(residue)
            for h, residues in owned.items():
                split.residues[h] = tuple(sorted(residues))

    def release_all(self, prefix: str, now: float) -> None:
        """Release every holder whose name starts with ``prefix`` (a deleted run's pods)."""
        for name in [h for h in self._held if h.startswith(prefix)]:
            self.release(name, now)

    def tracked_keys(self) -> list[str]:
        """The keys the book still tracks (held, or with grants not yet lapsed)."""
        return sorted(self._keys)

    def expire(self, now: float) -> None:
        """Visit every key now (the sweep does it a few at a time on every call)."""
        self._sweep(now, len(self._keys))

    def holders(self, key: str) -> list[str]:
        state = self._keys.get(key)
        return sorted(state.last_seen) if state else []

    def rate_of(self, key: str) -> float:
        """The rate in force for ``key``: the lowest its holders declare."""
        state = self._keys.get(key)
        rate = state.rate() if state else None
        return 0.0 if rate is None else rate

    # --- the decisions -----------------------------------------------------------------------

    def _visit(self, key: str, state: _Key, now: float) -> None:
        """Advance ``key`` to ``now``; drop it when idle, else move it to the sweep's end."""
        self._advance(key, state, now)
        state.visited = now
        if state.idle():
            del self._keys[key]
            # Its grants lapsed by now, but may have been valid earlier in this second.
            self._clean_from = max(self._clean_from, math.floor(now) + 1.0)
        else:
            self._keys.move_to_end(key)

    def _sweep(self, now: float, budget: int) -> None:
        """Visit up to ``budget`` keys nobody has visited for a lease, oldest first: their
        silent holders time out and, once every grant has lapsed, the key goes."""
        stale = self._stale(now, budget)
        for key in stale:
            self._visit(key, self._keys[key], now)

    def _stale(self, now: float, budget: int) -> Iterable[str]:
        out: list[str] = []
        for key, state in self._keys.items():
            if len(out) >= budget or now - state.visited < self.lease:
                break
            out.append(key)
        return out

    def _forget(self, state: _Key, holder: str, *, finished: bool = False) -> None:
        state.last_seen.pop(holder, None)
        state.declared.pop(holder, None)
        state.backlog.pop(holder, None)
        state.party.pop(holder, None)
        reservation = state.reserved.pop(holder, None)
        if reservation is not None and not finished:
            reservation.ended = True
            state.ended.append(reservation)

    def _advance(self, key: str, state: _Key, now: float) -> None:
        for holder, seen in list(state.last_seen.items()):
            if now - seen > self.holder_timeout:
                self._forget(state, holder)
                self._unhold(holder, key)
        state.ended = [r for r in state.ended if r.until > now]
        state.replaced = [r for r in state.replaced if r.until > now]
        if state.following is not None and state.following.start <= now:
            state.current, state.following = state.following, None
        if state.current is not None and state.current.until <= now:
            state.current = None
        wanted = sorted(state.last_seen)
        rate = state.rate()
        if not wanted or rate is None:
            return
        for holder, reservation in list(state.reserved.items()):
            if reservation.rate != rate:  # a new grid: the old seat lapses, then a new one
                self._forget_reservation(state, holder)
        latest = state.following or state.current
        newcomers = self._newcomers(state, wanted, now)
        pool = self._pool(state, now, extra=set())
        if (
            latest is not None
            and sorted(latest.residues) == wanted
            and latest.rate == rate
            and latest.pool == pool
            and not newcomers
            and not self._unbalanced(state, latest, now)
        ):
            return
        self._new_split(state, wanted, rate, newcomers, now)

    def _unhold(self, holder: str, key: str) -> None:
        held = self._held.get(holder)
        if held is not None:
            held.discard(key)
            if not held:
                del self._held[holder]

    def _forget_reservation(self, state: _Key, holder: str) -> None:
        reservation = state.reserved.pop(holder)
        reservation.ended = True
        state.ended.append(reservation)

    def _newcomers(self, state: _Key, wanted: list[str], now: float) -> list[str]:
        """Holders without a reservation for whom a seat is free (none while held off)."""
        if now < self._reserve_not_before:
            return []
        free = len(_RESERVABLE - state.taken_seats())
        lacking = [h for h in wanted if h not in state.reserved]
        return lacking[:free]

    def _pool(self, state: _Key, now: float, *, extra: set[int]) -> frozenset[int]:
        """Seats a split made now may lease: none reserved (or lapsing), and no reservable
        one while an earlier coordinator's reservations may stand."""
        taken = state.taken_seats() | extra
        if now < self._reserve_not_before:
            taken |= _RESERVABLE
        return _ALL_SEATS - taken

    def _weights(
        self, state: _Key, holders: list[str], pool: frozenset[int]
    ) -> dict[str, float] | None:
        """Pool weights that make each holder's whole rate (its reserved seat and its leased
        slots) follow its backlog within its party, so that a run's shards finish together
        instead of one after another (issue 17, item 4: shards' items differ by +-10 %, and
        the last one alone sent in the run's last seconds). Each party keeps the pool share
        an even split gives it (one per holder); a party with a holder whose backlog is
        unknown shares its part evenly. None: an even split (no party has two holders)."""
        parties: dict[str, list[str]] = {}
        for h in holders:
            parties.setdefault(state.party.get(h, h), []).append(h)
        if all(len(members) < 2 for members in parties.values()):
            return None
        even = len(pool) / len(holders)  # seats each holder leases in an even split
        weights: dict[str, float] = {}
        for members in parties.values():
            left = [state.backlog.get(h) for h in members]
            total_left = sum(b for b in left if b is not None)
            if None in left or total_left <= 0:
                weights.update(dict.fromkeys(members, even))
                continue
            seat = {h: float(h in state.reserved) for h in members}
            capacity = even * len(members) + sum(seat.values())  # in seats
            share = {h: capacity * state.backlog[h] / total_left for h in members}
            want = {h: max(0.0, share[h] - seat[h]) for h in members}
            scale = even * len(members) / (sum(want.values()) or 1.0)
            weights.update({h: w * scale for h, w in want.items()})
        return weights

    def _unbalanced(self, state: _Key, split: _Split, now: float) -> bool:
        """The split in force would leave some holders of a party sending well after the
        others (their backlogs moved apart since it was made, or were not known then):
        worth a new split, at most once per ``REBALANCE_LEASES`` leases."""
        if split is not state.current or state.following is not None or split.rate < 1:
            return False
        if now - split.start < REBALANCE_LEASES * self.lease or now - state.balance_checked < 1:
            return False  # a look costs a pass over the holders: once a second per key
        state.balance_checked = now
        per_second = SlotClock(split.rate).per_second
        finish: dict[str, list[float]] = {}
        for h, residues in split.residues.items():
            left = state.backlog.get(h)
            if left is None or not left:
                continue
            seats = len(residues) * SEATS / split.cycle + (h in state.reserved)
            finish.setdefault(state.party.get(h, h), []).append(left / (seats * per_second / SEATS))
        return any(
            len(times) > 1
            and max(times) - min(times) > max(REBALANCE_SPREAD, REBALANCE_SHARE * max(times))
            for times in finish.values()
        )

    def _new_split(
        self, state: _Key, wanted: list[str], rate: float, newcomers: list[str], now: float
    ) -> None:
        # A new split may start only after every lease handed out before it. A pending
        # split nobody has been given yet is simply replaced (it holds no commitments), so
        # holders arriving one after another do not push the next split further out.
        if state.following is not None and state.following.handed:
            state.replaced.append(state.following)
        start = max(now, self._not_before)
        for split in state.splits():
            if split is state.current or split.handed:
                start = max(start, split.until)
        # Another grid's grants must all lapse first (reservations included).
        for reservation in state.ended:
            if reservation.rate != rate:
                start = max(start, reservation.until)
        if state.grid == rate:
            # The same grid: its slots are the same instants whoever holds them, so the
            # split may start the moment the leases before it lapse, mid-second.
            start = max(start, state.grid_from)
        else:
            if state.grid is not None or start < self._clean_from:
                start = max(float(math.ceil(start)), self._clean_from)
            # else: the key's first grid, and no grant the book no longer tracks can count
            # in this second: start now (a run's first request; issue 17, item 4).
            state.grid, state.grid_from = rate, start
        free = sorted(_RESERVABLE - state.taken_seats())
        for holder, seat in zip(newcomers, free, strict=False):
            state.reserved[holder] = _Reservation(holder, seat, rate, start=start, until=start)
        pool = self._pool(state, now, extra=set())
        cycle, residues = split_pool(rate, wanted, pool, self._weights(state, wanted, pool))
        split = _Split(rate, cycle, residues, pool, start, start)
        if start <= now:
            state.current, state.following = split, None
        else:
            state.following = split

    def _grants_of(self, state: _Key, holder: str, now: float) -> list[GrantWire]:
        out: list[GrantWire] = []
        for old in state.replaced:  # committed: repeated, never extended
            if old.residues.get(holder):
                out.append(_wire(old.rate, old.cycle, old.residues[holder], old.start, old.until))
        for split in (state.current, state.following):
            if split is None or not split.residues.get(holder):
                continue
            # A split that starts later is handed out only this close to its start, so that
            # it can be replaced until then for free.
            if split is state.following and now < split.start - self.timing.handout_lead:
                continue  # too early: keep it replaceable (see _advance)
            following = state.following
            if split is state.current and following is None:
                # Renewal extends the split in force, unless a successor is waiting for it to end.
                split.until = max(split.until, now + self.lease)
            elif split is state.current and following is not None and following.rate != split.rate:
                # A new grid waits for the old one's reservations: until it starts, the old
                # grid's leases go on — never into a split already handed out to follow it.
                cap = min([following.start, *(r.start for r in state.replaced)])
                split.until = max(split.until, min(now + self.lease, cap))
            elif split.until <= split.start:
                split.until = split.start + self.lease
            split.handed = True
            out.append(
                _wire(split.rate, split.cycle, split.residues[holder], split.start, split.until)
            )
        for ended in state.ended:  # still this holder's until it lapses: repeated, not extended
            if ended.holder == holder:
                cycle, residues = seat_residues(ended.rate, ended.seat)
                out.append(_wire(ended.rate, cycle, residues, ended.start, ended.until))
        reservation = state.reserved.get(holder)
        if reservation is not None and now >= reservation.start - self.timing.handout_lead:
            reservation.until = max(
                reservation.until, max(now, reservation.start) + self.timing.reservation_seconds
            )
            cycle, residues = seat_residues(reservation.rate, reservation.seat)
            out.append(
                _wire(reservation.rate, cycle, residues, reservation.start, reservation.until)
            )
        return out


def _wire(
    rate: float, cycle: int, residues: tuple[int, ...], start: float, until: float
) -> GrantWire:
    return GrantWire(rate=rate, cycle=cycle, residues=list(residues), start=start, until=until)
