"""The one backoff policy: capped exponential delays with jitter, and nothing else.

Every retry loop in fleetsync — the engine's vendor attempts, the sinks' throttled or
unprocessed writes, the worker's reports to its coordinator — waits by this function, so
there is one place to reason about how hard a recovering dependency is hit.

Full jitter (AWS's "Exponential Backoff And Jitter") spreads retries of many shards so a
recovering vendor or table is not hit by a synchronised wave; a server's ``Retry-After`` is
a floor. Hand-written because the policy must be data (built from a manifest), pure and
driven by an injectable random source; tenacity's decorators are built around wrapping a
call, which the engine's per-attempt rate-limit slot and breaker check do not fit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

__all__ = ["RETRY_AFTER_CAP", "Backoff", "Jitter"]

Jitter = Literal["full", "equal", "none"]
RETRY_AFTER_CAP = 300.0  # a Retry-After past this is a vendor's mistake, not a plan


@dataclass(frozen=True, slots=True)
class Backoff:
    """``base * 2**(attempt-1)``, capped at ``cap``, jittered; ``attempt`` counts from 1."""

    base: float
    cap: float
    jitter: Jitter = "full"

    def delay(
        self, failed_attempt: int, rng: random.Random, *, retry_after: float | None = None
    ) -> float:
        ceiling = min(self.cap, self.base * 2 ** max(0, failed_attempt - 1))
        if self.jitter == "full":
            wait = rng.uniform(0, ceiling)
        elif self.jitter == "equal":
            wait = ceiling / 2 + rng.uniform(0, ceiling / 2)
        else:
            wait = ceiling
        if retry_after is not None:
            wait = max(wait, min(retry_after, RETRY_AFTER_CAP))
        return wait
