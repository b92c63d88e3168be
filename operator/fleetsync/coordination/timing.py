"""How long a rate-limit lease lasts, and every timing that must agree with it.

A coordinator leases slots for ``lease_seconds``; a holder silent for ``holder_timeout`` is
dropped from the next split; a shard that hears nothing falls back to its static share only
after ``fallback_after`` (by then every lease anyone could hold has lapsed); a split that
starts later is handed out at most ``handout_lead`` before its start. These numbers are tied:
a fallback that begins before leases lapse could double-book a slot. One frozen object holds
them, and every lease user (budget book, controller, ``fleetsync run``, worker) takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LeaseTiming"]


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    lease_seconds: float = 3.0
    # Holders report every second, so each gets a following split in time.
    handout_lead: float = 1.5

    def __post_init__(self) -> None:
        if self.lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if not 0 < self.handout_lead < self.lease_seconds:
            raise ValueError("handout_lead must be between 0 and lease_seconds")

    @property
    def holder_timeout(self) -> float:
        """A holder silent this long is left out of the next split."""
        return 2 * self.lease_seconds

    @property
    def fallback_after(self) -> float:
        """A shard silent this long uses its static share: every lease has lapsed by then."""
        return self.lease_seconds
