"""The fetch/retry loop of one item, ending in a typed value rather than an exception.

Each try passes the vendor's breaker, builds the request (templates, credentials), waits for
a rate-limit slot, sends, and classifies the answer: a success maps the body to attributes
(:class:`Fetched`); a failure that may pass is retried after the one backoff policy's delay;
anything else ends the item (:class:`FetchFailed`, with the number of attempts and a cause).
A 401 refreshes credentials once and retries at once. Nothing escapes :meth:`Attempts.fetch`:
a bug fails its item, it never hangs the shard.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from fleetsync.errors import PayloadError, PermanentError, ThrottledError, VendorError
from fleetsync.metrics import WorkerMetrics
from fleetsync.sinks.base import JSONValue
from fleetsync.worker.fetch import Fetcher, FetchResult
from fleetsync.worker.mapping import Mapper
from fleetsync.worker.requests import Request, RequestBuilder
from fleetsync.worker.retry import RetryPolicy
from fleetsync.worker.vendors import VendorRuntime

__all__ = ["Attempts", "FailureCause", "FetchFailed", "FetchOutcome", "Fetched"]

log = logging.getLogger("fleetsync.worker")

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


FetchOutcome: TypeAlias = Fetched | FetchFailed
_Retry: TypeAlias = float  # seconds to wait before the next attempt


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

    async def fetch(self, vendor: VendorRuntime, item: Mapping[str, JSONValue]) -> FetchOutcome:
        attempt = 0
        try:
            while True:
                attempt += 1
                step = await self._attempt(vendor, item, attempt)
                if not isinstance(step, float):
                    return step
                if step > 0:
                    await asyncio.sleep(step)
        except Exception as error:  # a bug must fail this item, never hang the shard
            log.exception("item of vendor %s: unexpected error", vendor.name)
            return FetchFailed(f"internal error: {type(error).__name__}", attempt, "internal")

    async def _attempt(
        self, vendor: VendorRuntime, item: Mapping[str, JSONValue], attempt: int
    ) -> FetchOutcome | _Retry:
        if not vendor.breaker.allow():
            reason = f"{vendor.name}: circuit breaker open, item not fetched"
            return FetchFailed(reason, attempt - 1, "breaker")
        try:
            request = await self.requests.build(vendor, item)
        except (PermanentError, VendorError) as error:
            return FetchFailed(f"{vendor.name}: {error}", attempt, "request")
        if vendor.limiter is not None:
            await vendor.limiter.acquire()
        vendor.stats.calls += 1
        self.vendor_calls += 1
        try:
            result = await self.fetcher.fetch(request.method, request.url, request.headers)
        except ThrottledError as error:
            return self._throttled(vendor, error, attempt)
        except VendorError as error:
            return await self._vendor_error(vendor, request, error, attempt)
        except PermanentError as error:  # a 4xx, or a URL outside allowedHosts
            return FetchFailed(f"{vendor.name}: {error}", attempt, "payload")
        return self._answered(vendor, item, result, attempt)

    def _throttled(
        self, vendor: VendorRuntime, error: ThrottledError, attempt: int
    ) -> FetchOutcome | _Retry:
        self._observe(vendor, "429", None)
        vendor.stats.throttled += 1
        vendor.concurrency.on_throttle()
        if not self.retry.retryable(status=429) or not self.retry.attempts_left(attempt):
            return FetchFailed(f"{vendor.name}: {error}", attempt, "throttled")
        return self.retry.delay(attempt, retry_after=error.retry_after, rng=self.rng)

    async def _vendor_error(
        self, vendor: VendorRuntime, request: Request, error: VendorError, attempt: int
    ) -> FetchOutcome | _Retry:
        code = {None: "timeout", -1: "connect"}.get(error.status, str(error.status))
        self._observe(vendor, code, None)
        vendor.stats.errors += 1
        refreshed = error.status == 401 and await self.requests.unauthorized(request)
        if refreshed and self.retry.attempts_left(attempt):
            return 0.0
        vendor.breaker.record(False)
        vendor.concurrency.on_error()
        retryable = self.retry.retryable(
            status=error.status if error.status and error.status > 0 else None,
            timeout=error.status is None,
            connect=error.status == -1,
        )
        if not retryable or not self.retry.attempts_left(attempt):
            return FetchFailed(f"{vendor.name}: {error}", attempt, "vendor")
        return self.retry.delay(attempt, rng=self.rng)

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
