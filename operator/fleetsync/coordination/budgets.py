"""Lease each rate-limit key's slots to the shards that want them, never double-booking.

Every key has at most one *split* in force: a division of its slot residues among holders,
valid from ``start`` to ``until``. Holders renew by reporting; each renewal extends the
split. When holders come or go the next split starts only once every lease handed out under
the current one has lapsed (at a whole second), so two holders never own one slot at the
same time, even when a report is delayed or a holder is alive but unreachable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from fleetsync.api.progress import GrantWire
from fleetsync.coordination.slots import split_residues
from fleetsync.coordination.timing import LeaseTiming

__all__ = ["BudgetBook"]


@dataclass(slots=True)
class _Split:
    rate: float
    cycle: int
    residues: dict[str, tuple[int, ...]]
    start: float
    until: float  # the latest lease end handed out under this split
    handed: bool = False  # has any holder been given a grant under it?


@dataclass(slots=True)
class _Key:
    current: _Split | None = None
    following: _Split | None = None
    last_seen: dict[str, float] = field(default_factory=dict)
    wanted_rate: float = 0.0
    # Splits replaced after some holders were given them: those leases still stand (their
    # holders keep using them), and nothing new starts before they end.
    replaced: list[_Split] = field(default_factory=list)


class BudgetBook:
    def __init__(self, timing: LeaseTiming | None = None) -> None:
        self.timing = timing or LeaseTiming()
        self.lease = self.timing.lease_seconds
        self.holder_timeout = self.timing.holder_timeout
        self._keys: dict[str, _Key] = {}
        # A restarted coordinator cannot know the leases its predecessor gave: hand out
        # nothing that starts before they have surely lapsed.
        self._not_before = 0.0

    def hold_off(self, now: float) -> None:
        """Call once at start-up: no split starts before every earlier lease has lapsed."""
        self._not_before = now + self.lease

    def renew(
        self, holder: str, wants: Mapping[str, float], now: float
    ) -> dict[str, list[GrantWire]]:
        """``holder`` reports the keys it has work for; returns its grants (current and next)."""
        grants: dict[str, list[GrantWire]] = {}
        for key, rate in wants.items():
            state = self._keys.setdefault(key, _Key())
            state.last_seen[holder] = now
            state.wanted_rate = rate
        for key, state in self._keys.items():
            if key not in wants:
                state.last_seen.pop(holder, None)
            self._advance(state, now)
            if key in wants:
                grants[key] = self._grants_of(state, holder, now)
        return grants

    def release(self, holder: str, now: float) -> None:
        for state in self._keys.values():
            state.last_seen.pop(holder, None)
            self._advance(state, now)

    def holders(self, key: str) -> list[str]:
        state = self._keys.get(key)
        return sorted(state.last_seen) if state else []

    def _advance(self, state: _Key, now: float) -> None:
        for holder, seen in list(state.last_seen.items()):
            if now - seen > self.holder_timeout:
                del state.last_seen[holder]
        if state.following is not None and state.following.start <= now:
            state.current, state.following = state.following, None
        if state.current is not None and state.current.until <= now:
            state.current = None
        wanted = sorted(state.last_seen)
        latest = state.following or state.current
        if (
            latest is not None
            and sorted(latest.residues) == wanted
            and latest.rate == state.wanted_rate
        ):
            return
        if not wanted:
            return
        # A new split: it may start only after every lease handed out before it. A pending
        # split nobody has been given yet is simply replaced (it holds no commitments), so
        # holders arriving one after another do not push the next split further out.
        if state.following is not None and state.following.handed:
            state.replaced.append(state.following)
        start = max(now, self._not_before, *(r.until for r in state.replaced))
        for split in (state.current, state.following):
            if split is not None and (split is state.current or split.handed):
                start = max(start, split.until)
        start = float(math.ceil(start))
        cycle, residues = split_residues(state.wanted_rate, wanted)
        split = _Split(state.wanted_rate, cycle, residues, start, start)
        if start <= now:
            state.current, state.following = split, None
        else:
            state.following = split

    def _grants_of(self, state: _Key, holder: str, now: float) -> list[GrantWire]:
        out: list[GrantWire] = []
        state.replaced = [r for r in state.replaced if r.until > now]
        for old in state.replaced:  # committed: repeated, never extended
            if holder in old.residues:
                out.append(
                    GrantWire(
                        rate=old.rate,
                        cycle=old.cycle,
                        residues=list(old.residues[holder]),
                        start=old.start,
                        until=old.until,
                    )
                )
        for split in (state.current, state.following):
            if split is None or holder not in split.residues:
                continue
            # A split that starts later is handed out only this close to its start, so that
            # it can be replaced until then for free.
            if split is state.following and now < split.start - self.timing.handout_lead:
                continue  # too early: keep it replaceable (see _advance)
            if split is state.current and state.following is None:
                # Renewal extends the split in force, unless a successor is waiting for it to end.
                split.until = max(split.until, now + self.lease)
            elif split.until <= split.start:
                split.until = split.start + self.lease
            split.handed = True
            out.append(
                GrantWire(
                    rate=split.rate,
                    cycle=split.cycle,
                    residues=list(split.residues[holder]),
                    start=split.start,
                    until=split.until,
                )
            )
        return out
