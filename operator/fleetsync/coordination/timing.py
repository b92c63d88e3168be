"""How long a rate-limit lease lasts, and every timing that must agree with it.

A coordinator leases slots for ``lease_seconds``; a holder silent for ``holder_timeout`` is
dropped from the next split; a split that starts later is handed out at most
``handout_lead`` before its start. Each holder also has a *reservation* (see
:mod:`fleetsync.coordination.budgets`) that stays valid ``reservation_seconds`` after its
last renewal: what a shard that cannot reach its coordinator goes on using, and how long a
restarted coordinator keeps its hands off reservable slots. These numbers are tied; one
frozen object holds them, and every lease user (budget book, controller, ``fleetsync run``,
worker) takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LeaseTiming"]


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    lease_seconds: float = 3.0
    # Holders report every second, so each gets a following split in time.
    handout_lead: float = 1.5
    # Long enough to ride out a controller restart; short enough that a departed holder's
    # slots return to the pool soon (and that a change of rate waits at most this long).
    reservation_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if not 0 < self.handout_lead < self.lease_seconds:
            raise ValueError("handout_lead must be between 0 and lease_seconds")
        if self.reservation_seconds < self.lease_seconds:
            raise ValueError("reservation_seconds must be at least lease_seconds")

    @property
    def holder_timeout(self) -> float:
        """A holder silent this long is left out of the next split."""
        return 2 * self.lease_seconds

    @property
    def fallback_after(self) -> float:
        """Deprecated with the static fallback share: a coordinated shard now uses its
        reservation, which needs no waiting (kept until the engine uses BudgetClient)."""
        return self.lease_seconds
