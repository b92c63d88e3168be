"""Everything one shard keeps per vendor: its rate-limit slots, breaker, concurrency and stats.

Vendors are resolved from the item's ``vendors.by`` field; items without one share the
``default`` vendor. Each vendor's rate limit has a *key* (``rateLimit.key``, default the
vendor's base URL) under which the coordinator divides the budget across shards and runs.

Every vendor costs a runtime here, a line in the run's status and a metric series, so a run
serves at most :data:`~fleetsync.api.v1alpha1.source.MAX_VENDORS` distinct vendors
(``vendors.by`` naming a field with one value per item once made 6,000).
:class:`VendorCount` sees every item of the inventory, before sharding, so each shard of a
run reaches the same verdict: a :class:`~fleetsync.errors.ManifestError` (exit 64) naming
``spec.source.vendors.by``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from fleetsync.api.constants import BreakerState
from fleetsync.api.limits import limit_for
from fleetsync.api.progress import VendorWire
from fleetsync.api.v1alpha1.source import MAX_VENDORS
from fleetsync.api.v1alpha1.syncjob import Source
from fleetsync.errors import ManifestError
from fleetsync.worker.breaker import CircuitBreaker
from fleetsync.worker.concurrency import AdaptiveConcurrency, ConcurrencyGate
from fleetsync.worker.ratelimit import SlotLimiter
from fleetsync.worker.template import VendorName

__all__ = [
    "DEFAULT_VENDOR",
    "MAX_VENDORS",
    "MAX_VENDOR_NAME",
    "VendorCount",
    "VendorRuntime",
    "VendorStats",
    "limit_for",
    "vendor_of",
]

DEFAULT_VENDOR = "default"
_LATENCY_SAMPLES = 1024


@dataclass(slots=True)
class VendorStats:
    calls: int = 0
    errors: int = 0
    throttled: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_SAMPLES))

    def p95_ms(self) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return round(ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)] * 1000, 1)


def vendor_of(source: Source, item: Mapping[str, object]) -> str:
    """The vendor an item belongs to: its ``vendors.by`` field, else :data:`DEFAULT_VENDOR`."""
    by = source.vendors.by if source.vendors else None
    return str(item.get(by) or DEFAULT_VENDOR) if by else DEFAULT_VENDOR


# A DNS name's length: vendor names land in status, metric labels and stored progress, whose
# sizes are bounded with this (controller/progress_parts.py).
MAX_VENDOR_NAME = 253


class VendorCount:
    """The distinct vendors of a run's inventory, refused past :data:`MAX_VENDORS`.

    Call :meth:`observe` on every item, before the shard filter."""

    def __init__(self, source: Source, limit: int = MAX_VENDORS) -> None:
        self._source = source
        self._limit = limit
        self._seen: set[str] = set()

    def observe(self, item: Mapping[str, object]) -> str:
        """The item's vendor; ManifestError when it is one vendor too many."""
        name = vendor_of(self._source, item)
        if name not in self._seen:
            by = self._source.vendors.by if self._source.vendors else "vendor"
            if len(name) > MAX_VENDOR_NAME:
                reason = (
                    f"a vendor name in field {by!r} is {len(name)} characters long; at most "
                    f"{MAX_VENDOR_NAME} (it names the vendor in status, metrics and progress)"
                )
                raise ManifestError([("spec.source.vendors.by", reason)])
            if len(self._seen) >= self._limit:
                reason = (
                    f"the inventory names more than {self._limit} distinct vendors in field "
                    f"{by!r}; a run serves at most {self._limit} (name a field with few values)"
                )
                raise ManifestError([("spec.source.vendors.by", reason)])
            self._seen.add(name)
        return name

    def __len__(self) -> int:
        return len(self._seen)


class VendorRuntime:
    def __init__(self, name: str, source: Source, *, limiter: SlotLimiter | None) -> None:
        override = source.vendors.items.get(name) if source.vendors else None
        self.name = name
        self.template_value = VendorName(name, override.base_url or "" if override else "")
        self.headers = dict(override.headers) if override else {}
        self.limit_key, self.rate = limit_for(source, name)
        self.limiter = limiter
        self.breaker = CircuitBreaker(source.circuit_breaker)
        self.concurrency = AdaptiveConcurrency(source.concurrency)
        self.gate = ConcurrencyGate(self.concurrency)
        self.stats = VendorStats()
        self.pending = 0  # items queued or in flight: while > 0 the shard wants budget
        self.fetching = 0  # items of those inside the concurrency gate
        # The reason of the vendor's last availability failure (5xx, timeout, connection):
        # the cause an item carries when it gives up on an outage before its own first try.
        self.last_failure: str | None = None

    @property
    def waiting(self) -> int:
        """Items held back by the breaker (queued or deferred), 0 while it is Closed."""
        if self.breaker.state is BreakerState.CLOSED:
            return 0
        return max(0, self.pending - self.fetching)

    def wire(self, rate_in_force: float | None = None) -> VendorWire:
        snapshot = self.breaker.snapshot()
        return VendorWire(
            name=self.name,
            calls=self.stats.calls,
            errors=self.stats.errors,
            throttled=self.stats.throttled,
            p95Ms=self.stats.p95_ms(),
            breaker=str(snapshot.state),
            breakerSince=time.time() - (time.monotonic() - snapshot.since),
            breakerForced=snapshot.forced,
            concurrency=self.concurrency.limit,
            limitKey=self.limit_key,
            requestsPerSecond=self.limiter.current_share() if self.limiter else None,
            waiting=self.waiting,
            rateInForce=rate_in_force,
            rateDeclared=self.rate,
        )
