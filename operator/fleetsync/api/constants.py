"""Names every part agrees on: API group, exit codes, condition types and reasons.

Kept in one module so the controller, the worker, the CLI and the tests cannot drift
(sample-controller keeps its reasons the same way).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

GROUP = "fleetsync.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

ANNOTATION_RUN_NOW = f"{GROUP}/run-now"
ANNOTATION_SCHEDULED_TIME = f"{GROUP}/scheduled-time"
FINALIZER = f"{GROUP}/finalizer"

INLINE_INVENTORY_MAX = 1000
FAILED_SAMPLE_MAX = 20
# Shards of one run, at most: every shard's progress must fit the run's progress ConfigMaps
# (1 MiB each, 100 shards per part; see controller/progress_parts.py).
MAX_SHARDS = 1000


class ExitCode(IntEnum):
    """Process exit codes; the Job's ``podFailurePolicy`` and ``fleetsync run`` rely on them."""

    OK = 0  # shard done / run Succeeded
    FAILED = 1  # run Failed (``fleetsync run``); any unexpected crash of a worker
    PARTIAL = 2  # run PartiallySucceeded (``fleetsync run`` only)
    INVALID_CONFIG = 64  # EX_USAGE: invalid manifest/config/usage; never retried
    INTERRUPTED = 75  # EX_TEMPFAIL: SIGTERM; checkpoint saved, a replacement resumes


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.PARTIALLY_SUCCEEDED, Phase.FAILED)


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    COMPLETE = "Complete"
    FAILED = "Failed"
    DEGRADED = "Degraded"
    SUSPENDED = "Suspended"


class Reason(StrEnum):
    """CamelCase condition reasons."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    TOO_MANY_FAILURES = "TooManyItemFailures"
    INVALID_SPEC = "InvalidSpec"
    SUSPENDED = "Suspended"
    BREAKER_OPEN = "BreakerOpen"
    ITEMS_FAILING = "ItemsFailing"
    HEALTHY = "Healthy"
    POD_START_FAILED = "PodStartFailed"
    AS_EXPECTED = "AsExpected"
    ACCOUNTING_ERROR = "AccountingError"  # the item counts do not add up to the total
    ALL_ITEMS_FAILED = "AllItemsFailed"  # items failed and not one was synced or kept


class BreakerState(StrEnum):
    CLOSED = "Closed"
    OPEN = "Open"
    HALF_OPEN = "HalfOpen"


class ItemOutcome(StrEnum):
    """How one item ended in one run; every item ends in exactly one."""

    SYNCED = "synced"  # written to the sink
    UNCHANGED = "unchanged"  # fetched, same attributes as stored: no write
    FRESH = "fresh"  # synced more recently than ``freshFor``: not fetched
    STALE = "stale"  # older than the stored record (``monotonicOn``): not written
    FAILED = "failed"  # dead-lettered
