"""Prometheus metrics of the data path, on a registry passed in (never the global one).

Labels are ``namespace``, ``owner`` (the SyncSchedule, or the SyncJob when unscheduled) and
``vendor`` — never a run, pod or item — so cardinality stays flat as runs come and go.
Names are the contract of the alerts and the dashboard; a test checks both use only these.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fleetsync.api.constants import BreakerState

__all__ = ["BREAKER_VALUES", "WorkerMetrics"]

BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    namespace: str
    owner: str
    items: Counter
    vendor_requests: Counter
    vendor_latency: Histogram
    vendor_throttled: Counter
    vendor_breaker: Gauge
    vendor_concurrency: Gauge
    sink_calls: Counter
    sink_write_units: Counter
    sink_unprocessed: Counter
    sink_throttles: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry, *, namespace: str, owner: str) -> WorkerMetrics:
        base = ["namespace", "owner"]
        vendor = [*base, "vendor"]
        return cls(
            namespace=namespace,
            owner=owner,
            items=Counter(
                "fleetsync_items", "Items finished, by outcome.", [*base, "outcome"],
                registry=registry,
            ),
            vendor_requests=Counter(
                "fleetsync_vendor_requests", "Requests to vendors, by answer (HTTP code, "
                "timeout, connect).", [*vendor, "code"], registry=registry,
            ),
            vendor_latency=Histogram(
                "fleetsync_vendor_request_duration_seconds", "Vendor response time.", vendor,
                buckets=_LATENCY_BUCKETS, registry=registry,
            ),
            vendor_throttled=Counter(
                "fleetsync_vendor_throttled", "429 answers from vendors.", vendor,
                registry=registry,
            ),
            vendor_breaker=Gauge(
                "fleetsync_vendor_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.",
                vendor, registry=registry,
            ),
            vendor_concurrency=Gauge(
                "fleetsync_vendor_concurrency", "Concurrent requests allowed per vendor.", vendor,
                registry=registry,
            ),
            sink_calls=Counter(
                "fleetsync_sink_calls", "Calls to the sink, reads included.", [*base, "sink"],
                registry=registry,
            ),
            sink_write_units=Counter(
                "fleetsync_sink_write_units", "Write capacity units consumed.", [*base, "sink"],
                registry=registry,
            ),
            sink_unprocessed=Counter(
                "fleetsync_sink_unprocessed_items", "Items a batch write handed back (DynamoDB "
                "UnprocessedItems).", [*base, "sink"], registry=registry,
            ),
            sink_throttles=Counter(
                "fleetsync_sink_throttles", "Throttled sink calls.", [*base, "sink"],
                registry=registry,
            ),
        )  # fmt: skip

    def item(self, outcome: str) -> None:
        self.items.labels(self.namespace, self.owner, outcome).inc()

    def request(self, vendor: str, code: str, latency: float | None) -> None:
        self.vendor_requests.labels(self.namespace, self.owner, vendor, code).inc()
        if latency is not None:
            self.vendor_latency.labels(self.namespace, self.owner, vendor).observe(latency)
        if code == "429":
            self.vendor_throttled.labels(self.namespace, self.owner, vendor).inc()

    def vendor_state(self, vendor: str, breaker: BreakerState, concurrency: int) -> None:
        self.vendor_breaker.labels(self.namespace, self.owner, vendor).set(BREAKER_VALUES[breaker])
        self.vendor_concurrency.labels(self.namespace, self.owner, vendor).set(concurrency)

    def sink_delta(
        self, sink: str, *, calls: int, write_units: float, unprocessed: int, throttles: int
    ) -> None:
        labels = (self.namespace, self.owner, sink)
        if calls:
            self.sink_calls.labels(*labels).inc(calls)
        if write_units:
            self.sink_write_units.labels(*labels).inc(write_units)
        if unprocessed:
            self.sink_unprocessed.labels(*labels).inc(unprocessed)
        if throttles:
            self.sink_throttles.labels(*labels).inc(throttles)
