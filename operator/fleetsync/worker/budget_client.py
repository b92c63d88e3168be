"""What a shard does with the rate-limit budgets its coordinator grants, and without them.

The engine keeps one :class:`SlotLimiter` per rate-limit key and asks this client for it.
After each report it hands the client the reply (:meth:`BudgetClient.on_reply`) or, when
there was none, says so (:meth:`BudgetClient.on_silence`):

- A *coordinated* shard (the controller or ``fleetsync run`` keeps its reports) uses only
  what its coordinator granted: its leases and its reservation, each until its ``until``.
  When reports fail it changes nothing: the leases lapse by themselves and the reservation
  (valid ``reservation_seconds`` past its last renewal) carries the shard through a
  coordinator restart at a small, safe rate. A shard that has never heard from its
  coordinator waits. Why this holds the key's limit across runs:
  :mod:`fleetsync.coordination.budgets`.
- A *standalone* shard (no coordinator at all, ``fleetsync worker`` without
  ``--coordinator``) has nobody to share a key with but its own run's shards, so it uses the
  static share ``rate / maxParallelism`` on residues of its own
  (:func:`~fleetsync.coordination.slots.fallback_grant`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from fleetsync.api.progress import GrantWire, ReplyWire
from fleetsync.coordination.slots import Grant, fallback_grant
from fleetsync.worker.ratelimit import SlotLimiter

__all__ = ["BudgetClient", "grant_of"]


def grant_of(wire: GrantWire) -> Grant:
    return Grant(
        rate=wire["rate"],
        cycle=wire["cycle"],
        residues=tuple(wire["residues"]),
        start=wire["start"],
        until=wire["until"],
    )


class BudgetClient:
    def __init__(
        self,
        *,
        shard: int,
        max_parallelism: int,
        coordinated: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.shard = shard
        self.max_parallelism = max_parallelism
        self.coordinated = coordinated
        self._clock = clock
        self._limiters: dict[str, SlotLimiter] = {}
        self._declared: dict[str, float] = {}
        # The rate in force per key, as the coordinator last said (the lowest any run
        # sharing the key declares); absent until it has said.
        self.rates: dict[str, float] = {}

    @property
    def limiters(self) -> dict[str, SlotLimiter]:
        return dict(self._limiters)

    def limiter_for(self, key: str, rate: float) -> SlotLimiter:
        """The one limiter of ``key`` (created on first use). ``rate`` is what this shard's
        vendor declares; several vendors on one key count at the lowest."""
        self._declared[key] = min(rate, self._declared.get(key, math.inf))
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = SlotLimiter(clock=self._clock)
        return limiter

    def wants(self, keys: set[str]) -> dict[str, float]:
        """The report's ``wants`` for the keys that still have work."""
        return {k: r for k, r in self._declared.items() if k in keys}

    def on_reply(self, reply: ReplyWire, now: float) -> None:
        """Take the coordinator's grants. A key missing from the reply keeps what it has
        (a reply to a stale report carries none)."""
        for key, wires in reply["grants"].items():
            limiter = self._limiters.get(key)
            if limiter is not None:
                limiter.set_grants([grant_of(w) for w in wires])
        self.rates.update(reply.get("rates", {}))

    def on_silence(self, now: float) -> None:
        """No reply to a report. Coordinated: keep the grants (they lapse on their own).
        Standalone: make sure each key has its static share."""
        if self.coordinated:
            return
        start = float(math.floor(now) + 1)
        for key, limiter in self._limiters.items():
            if not any(g.until > now for g in limiter.grants):
                rate = self._declared[key]
                limiter.set_grants(
                    [fallback_grant(rate, self.shard, self.max_parallelism, start=start)]
                )
