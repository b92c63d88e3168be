"""The fetch/retry loop of one item, ending in a typed value rather than an exception.

Each try passes the vendor's breaker, builds the request (templates, credentials), waits for
a rate-limit slot, sends, and classifies the answer: a success maps the body to attributes
(:class:`Fetched`); a failure that may pass is retried after the one backoff policy's delay;
anything else ends the item (:class:`FetchFailed`, with the number of attempts and a cause).
A 401 refreshes credentials once and retries at once. Nothing escapes :meth:`Attempts.fetch`:
a bug fails its item, it never hangs the shard.

A breaker that is open does not fail the item: :meth:`Attempts.fetch` returns
:class:`Deferred` (the real attempts so far and the last one's outcome), the dispatcher
waits outside the vendor's concurrency gate and calls again with that state. A retryable
failure while the breaker is not Closed (the one that opened it, or a failed half-open
probe) spends no retry: the item waits for the vendor instead, so an outage shorter than
``maxOutageSeconds`` fails nothing. A reason is
always a real outcome (an HTTP status, a connection error, a timeout, a mapping error),
never "breaker open": the vendor's last one is kept (:attr:`VendorRuntime.last_failure`)
for items that give up before their own first try.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from fleetsync.api.constants import BreakerState
from fleetsync.errors import PayloadError, PermanentError, ThrottledError, VendorError
from fleetsync.sinks.base import JSONValue
from fleetsync.worker.fetch import Fetcher, FetchResult
from fleetsync.worker.mapping import Mapper
from fleetsync.worker.requests import Request, RequestBuilder
from fleetsync.worker.retry import RetryPolicy
from fleetsync.worker.vendors import VendorRuntime

if TYPE_CHECKING:  # annotations only: a run without /metrics never imports prometheus_client
    from fleetsync.metrics import WorkerMetrics

__all__ = [
    "FREE_THROTTLES",
    "Attempts",
    "Deferred",
    "FailureCause",
    "FetchFailed",
    "FetchOutcome",
    "Fetched",
]

log = logging.getLogger("fleetsync.worker")
# 429s per item that do not count as attempts: a vendor that keeps throttling one item past
# these fails it after maxAttempts more, so an item never waits forever.
FREE_THROTTLES = 8

# Why an item failed: where in the pipeline, not the message (that is ``reason``).
FailureCause = Literal[
    "breaker", "request", "throttled", "vendor", "payload", "internal", "no-key", "sink"
]


@dataclass(frozen=True, slots=True)
class Fetched:
    attributes: dict[str, JSONValue]
    attempts: int


@dataclass(frozen=True, slots=True)
class FetchFailed:
    reason: str
    attempts: int
    cause: FailureCause


@dataclass(frozen=True, slots=True)
class Deferred:
    """The vendor's breaker refused the next attempt: wait for it, then resume from here."""

    attempts: int  # real attempts made so far
    last: str | None  # the reason of the last of them, if it failed
    free: int = 0  # of those, 429s that did not use up an attempt (FREE_THROTTLES)


@dataclass(frozen=True, slots=True)
class _Retry:
    delay: float  # seconds to wait before the next attempt
    reason: str  # why this attempt failed
    free: bool = False  # a 429 that did not use up one of the item's attempts
    outside: bool = False  # wait without the item's concurrency slot (see _back_off_outside)


FetchOutcome: TypeAlias = Fetched | FetchFailed


async def _back_off_outside(vendor: VendorRuntime, delay: float) -> None:
    """Wait out the backoff after a vendor's availability failure (5xx, timeout, refused)
    without the item's concurrency slot, then take one again as any send does: the gate
    counts requests in flight, not items between tries (as client-go's workqueue keeps a
    requeued item off its workers). Held through the backoff, the slots of a vendor in an
    outage all sat asleep; its calls trickled (~40/s at a 300/s limit), its breaker needed
    ~0.3 s to see ``minimumCalls`` answers, and an early item could spend every attempt
    before it opened: a 3 s outage dead-lettered items the breaker would have held back.
    429s keep their slot: the learned rate paces them. Cancelled meanwhile, the slot is
    counted again at once, so the caller's release stays balanced."""
    vendor.fetching -= 1
    vendor.gate.release()
    try:
        await asyncio.sleep(delay)
        await vendor.gate.acquire()
    except BaseException:
        vendor.gate.hold()
        vendor.fetching += 1
        raise
    vendor.fetching += 1


class Attempts:
    """Fetches one item at a time for many concurrent callers; counts vendor calls."""

    def __init__(
        self,
        *,
        fetcher: Fetcher,
        requests: RequestBuilder,
        mapper: Mapper,
        retry: RetryPolicy,
        rng: random.Random,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.requests = requests
        self.mapper = mapper
        self.retry = retry
        self.rng = rng
        self.metrics = metrics
        self.vendor_calls = 0

    async def fetch(
        self,
        vendor: VendorRuntime,
        item: Mapping[str, JSONValue],
        *,
        resume: Deferred | None = None,
    ) -> FetchOutcome | Deferred:
        """Try ``item`` until it ends; ``resume``: where a :class:`Deferred` one stopped.
        The caller holds a slot of ``vendor.gate`` (the dispatcher does), and holds it again
        when this returns."""
        attempt, last = (resume.attempts, resume.last) if resume else (0, None)
        free = resume.free if resume else 0  # 429s that did not count as attempts
        try:
            while True:
                if not vendor.breaker.allow():
                    return Deferred(attempt, last, free)
                attempt += 1
                step = await self._attempt(vendor, item, attempt, throttled=free)
                if not isinstance(step, _Retry):
                    return step
                free += step.free
                last = step.reason
                if step.delay > 0 and step.outside:
                    await _back_off_outside(vendor, step.delay)
                elif step.delay > 0:
                    await asyncio.sleep(step.delay)
        except Exception as error:  # a bug must fail this item, never hang the shard
            log.exception("item of vendor %s: unexpected error", vendor.name)
            return FetchFailed(f"internal error: {type(error).__name__}", attempt, "internal")

    async def _attempt(
        self,
        vendor: VendorRuntime,
        item: Mapping[str, JSONValue],
        attempt: int,
        *,
        throttled: int = 0,
    ) -> FetchOutcome | _Retry:
        try:
            request = await self.requests.build(vendor, item)
        except (PermanentError, VendorError) as error:
            vendor.breaker.release()
            return FetchFailed(f"{vendor.name}: {error}", attempt, "request")
        if vendor.limiter is not None:
            await vendor.limiter.acquire()
        vendor.stats.calls += 1
        self.vendor_calls += 1
        try:
            result = await self.fetcher.fetch(request.method, request.url, request.headers)
        except ThrottledError as error:
            return self._throttled(vendor, error, attempt, throttled=throttled)
        except VendorError as error:
            return await self._vendor_error(
                vendor, request, error, attempt, used=attempt - throttled
            )
        except PermanentError as error:  # a 4xx, or a URL outside allowedHosts
            vendor.breaker.release()
            return FetchFailed(f"{vendor.name}: {error}", attempt, "payload")
        return self._answered(vendor, item, result, attempt)

    def _throttled(
        self, vendor: VendorRuntime, error: ThrottledError, attempt: int, *, throttled: int = 0
    ) -> FetchOutcome | _Retry:
        """A 429. The first :data:`FREE_THROTTLES` of an item do not use up its attempts (the
        vendor pacing the fleet, e.g. while adaptive concurrency learns a lowered limit, is
        not the item failing); they wait Retry-After or a backoff growing with each one."""
        self._observe(vendor, "429", None)
        vendor.breaker.release()
        vendor.stats.throttled += 1
        vendor.concurrency.on_throttle()
        reason = f"{vendor.name}: {error}"
        if not self.retry.retryable(status=429):
            return FetchFailed(reason, attempt, "throttled")
        delay = self.retry.delay(attempt, retry_after=error.retry_after, rng=self.rng)
        if throttled < FREE_THROTTLES:
            return _Retry(delay, reason, free=True)
        if not self.retry.attempts_left(attempt - throttled):
            return FetchFailed(reason, attempt, "throttled")
        return _Retry(delay, reason)

    async def _vendor_error(
        self,
        vendor: VendorRuntime,
        request: Request,
        error: VendorError,
        attempt: int,
        *,
        used: int,
    ) -> FetchOutcome | _Retry:
        """``attempt`` calls so far; ``used`` of them count against maxAttempts."""
        code = {None: "timeout", -1: "connect"}.get(error.status, str(error.status))
        self._observe(vendor, code, None)
        vendor.stats.errors += 1
        reason = f"{vendor.name}: {error}"
        refreshed = error.status == 401 and await self.requests.unauthorized(request)
        if refreshed and self.retry.attempts_left(used):
            vendor.breaker.release()
            return _Retry(0.0, reason)
        vendor.breaker.record(False)
        vendor.last_failure = reason
        vendor.concurrency.on_error()
        retryable = self.retry.retryable(
            status=error.status if error.status and error.status > 0 else None,
            timeout=error.status is None,
            connect=error.status == -1,
        )
        if retryable and vendor.breaker.state is not BreakerState.CLOSED:
            # The vendor is down (this failure may have opened the breaker, or it was a
            # half-open probe): wait for it at the next try rather than spend retries.
            return _Retry(0.0, reason)
        if not retryable or not self.retry.attempts_left(used):
            return FetchFailed(reason, attempt, "vendor")
        return _Retry(self.retry.delay(used, rng=self.rng), reason, outside=True)

    def _answered(
        self,
        vendor: VendorRuntime,
        item: Mapping[str, JSONValue],
        result: FetchResult,
        attempt: int,
    ) -> FetchOutcome:
        self._observe(vendor, str(result.status), result.latency)
        vendor.breaker.record(True)
        vendor.concurrency.on_success(result.latency)
        vendor.stats.latencies.append(result.latency)
        try:
            attributes = self.mapper.apply(self.mapper.decode(result.body), item)
        except PayloadError as error:
            return FetchFailed(f"{vendor.name}: {error}", attempt, "payload")
        return Fetched(attributes, attempt)

    def _observe(self, vendor: VendorRuntime, code: str, latency: float | None) -> None:
        if self.metrics is not None:
            self.metrics.request(vendor.name, code, latency)
