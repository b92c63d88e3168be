"""The wire format between a shard and its coordinator (``fleetsync run``'s local one, or the
controller): cumulative progress up, budgets and fleet-wide breaker verdicts down.

TypedDicts rather than models: these are parsed at a high rate on the coordinator's side and
the shapes are internal to fleetsync (both ends ship in one package version).

Failures are counted by *cause* (``causes`` on a report): a dead letter's reason without its
per-item details (:func:`cause_of`), so a thousand items refused by one vendor are one entry
with a count, exact, while ``failedSample`` keeps up to 20 whole reasons. A report is kept
by the controller in a ConfigMap (< 1 MiB for every shard of a run), so the map is bounded
(:func:`count_cause`): at most :data:`MAX_CAUSES` causes of at most
:data:`MAX_CAUSE_CHARS` characters, every further cause counted under :data:`OTHER_CAUSE`.
A shard's map is at most ~2.2 KB; the controller's snapshot trims it to
:data:`SNAPSHOT_CAUSES` (~1.1 KB per shard), the counts still summing to the failures.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal, NotRequired, TypedDict

__all__ = [
    "FINAL_STATES",
    "MAX_CAUSES",
    "MAX_CAUSE_CHARS",
    "OTHER_CAUSE",
    "SNAPSHOT_CAUSES",
    "CheckpointWire",
    "CostWire",
    "ErrorWire",
    "FailedWire",
    "FailureSample",
    "GrantWire",
    "ReplyWire",
    "ReportWire",
    "ShardState",
    "VendorWire",
    "bound_causes",
    "cause_of",
    "count_cause",
    "diverse_sample",
]

ShardState = Literal["starting", "running", "done", "interrupted", "failed"]
# A shard's last report: its pod exits once the report is acknowledged.
FINAL_STATES: frozenset[str] = frozenset({"done", "interrupted", "failed"})


class CheckpointWire(TypedDict):
    watermark: int
    above: str
    counts: dict[str, int]


class VendorWire(TypedDict):
    name: str
    calls: int
    errors: int
    throttled: int
    p95Ms: float | None
    breaker: str
    breakerSince: float | None  # wall-clock epoch seconds
    breakerForced: bool  # Open because the coordinator said so, not by this shard's calls
    concurrency: int
    limitKey: str | None
    requestsPerSecond: float | None
    waiting: NotRequired[int]  # items held back by an open breaker
    # The rate its key runs at (the lowest any run sharing the key declares) and the rate
    # this vendor declares: when they differ, status says another run holds the key lower.
    rateInForce: NotRequired[float | None]
    rateDeclared: NotRequired[float | None]


class CostWire(TypedDict):
    vendorCalls: int
    sinkCalls: int
    writeUnits: float
    readUnits: float
    unprocessedItems: int
    throttles: int


class FailedWire(TypedDict):
    key: str
    reason: str
    attempts: int


class ErrorWire(TypedDict):
    """A shard's configuration error, as the CLI's JSON ``error`` object says it."""

    field: str | None
    reason: str
    hint: str | None


class ReportWire(TypedDict):
    run: str
    shard: int
    pod: str
    # Counts up with every report of one pod: a coordinator ignores a report older than one
    # it already took from that pod (HTTP retries and slow paths reorder them).
    seq: int
    state: ShardState
    shardTotal: int | None  # items of this shard, once the inventory has been read to the end
    seen: int  # items of this shard read from the inventory so far
    checkpoint: CheckpointWire | None
    vendors: list[VendorWire]
    cost: CostWire
    failedSample: list[FailedWire]
    wants: dict[str, float]  # rate-limit key -> requests/s, for keys with work pending
    # rate-limit key -> items still to fetch under it, once the inventory is read to the end:
    # a coordinator divides a run's share of the key by it (its shards finish together)
    backlog: NotRequired[dict[str, int]]
    error: NotRequired[str]
    # A configuration error, field by field: `fleetsync run` says it as if found in its own
    # process (exit 64, the JSON error object), however many processes its shards ran in.
    errorDetail: NotRequired[ErrorWire]
    # cause -> items of this pod dead-lettered for it (cumulative; bounded, see above)
    causes: NotRequired[dict[str, int]]


class GrantWire(TypedDict):
    rate: float
    cycle: int
    residues: list[int]
    start: float
    until: float


class ReplyWire(TypedDict):
    # Per rate-limit key: the grants this shard may use, each valid in [start, until). The
    # longest-lived is the shard's *reservation* (see coordination.budgets): it goes on
    # being valid while the coordinator is unreachable.
    grants: dict[str, list[GrantWire]]
    breakers: dict[str, str]
    stop: bool
    resume: CheckpointWire | None
    # Per key granted: the rate in force, the lowest any holder of the key declares; below
    # the shard's own ``wants`` when another run declares less.
    rates: NotRequired[dict[str, float]]


MAX_CAUSES = 16  # distinct causes a shard (or a run's status) counts; the rest are "other"
MAX_CAUSE_CHARS = 120
SNAPSHOT_CAUSES = 8  # kept per shard in the controller's progress ConfigMap
OTHER_CAUSE = "other"
# Per-item details inside a cause: a byte offset ("at byte 17"), an id in a note "(…)".
_POSITION = re.compile(r"\s+at (?:byte|offset) \d+|\s+\(byte offset \d+\)")
_NOTE = re.compile(r"\s*\([^()]*\)\s*$")


def cause_of(reason: str) -> str:
    """The cause a dead letter's ``reason`` counts under: its first two ``": "``-separated
    parts (who, then what: ``sungrow: HTTP 503``, ``sungrow: connection refused``,
    ``sink: SinkError``), without the body excerpt or detail that follows, a trailing
    note in parentheses or a byte offset, cut to :data:`MAX_CAUSE_CHARS`."""
    head = ": ".join(reason.split(": ", 2)[:2])
    head = _POSITION.sub("", head)
    while (trimmed := _NOTE.sub("", head)) != head and trimmed:
        head = trimmed
    head = " ".join(head.split())
    if len(head) > MAX_CAUSE_CHARS:
        head = head[: MAX_CAUSE_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return head or OTHER_CAUSE


def count_cause(counts: dict[str, int], cause: str, n: int = 1, *, limit: int = MAX_CAUSES) -> None:
    """Add ``n`` to ``cause`` in ``counts``, or to :data:`OTHER_CAUSE` once ``limit`` other
    causes are counted (``counts`` then holds at most ``limit + 1`` entries)."""
    if cause not in counts and len(counts.keys() - {OTHER_CAUSE}) >= limit:
        cause = OTHER_CAUSE
    counts[cause] = counts.get(cause, 0) + n


def bound_causes(
    counts: Mapping[str, int] | Iterable[tuple[str, int]], limit: int
) -> dict[str, int]:
    """The ``limit`` most frequent causes, the rest summed as :data:`OTHER_CAUSE`; the total
    is unchanged."""
    pairs = counts.items() if isinstance(counts, Mapping) else counts
    merged: dict[str, int] = {}
    for cause, n in pairs:
        merged[cause] = merged.get(cause, 0) + n
    other = merged.pop(OTHER_CAUSE, 0)
    ranked = sorted(merged.items(), key=lambda c: (-c[1], c[0]))
    kept = dict(ranked[:limit])
    other += sum(n for _, n in ranked[limit:])
    if other:
        kept[OTHER_CAUSE] = other
    return kept


class FailureSample:
    """The last ``size`` failures of a shard, but one of each cause kept while it fits.

    Failures come in runs (a vendor down for a while fails everything it is sent at once),
    and the summary and status show an example per cause from this sample: a plain "last
    20" lost every cause but the latest run's. When full, a new failure evicts the oldest
    entry whose cause the sample holds more than once, the new one counted (else the oldest
    of all), so the sample stays recent and keeps an example of up to ``size`` causes
    (:data:`MAX_CAUSES`, 16, fit in 20)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: list[tuple[str, FailedWire]] = []
        self._causes: Counter[str] = Counter()

    def add(self, failure: FailedWire) -> str:
        """Keep ``failure``; return its cause (:func:`cause_of`), for the caller's counts."""
        cause = cause_of(failure["reason"])
        entries, causes = self._entries, self._causes
        entries.append((cause, failure))
        causes[cause] += 1
        if len(entries) > self._size:
            # The oldest whose cause stays in the sample without it; else the oldest.
            victim = next((i for i, (c, _) in enumerate(entries) if causes[c] > 1), 0)
            gone, _ = entries.pop(victim)
            causes[gone] -= 1
        return cause

    def __iter__(self) -> Iterator[FailedWire]:
        return (failure for _, failure in self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def diverse_sample(failures: Iterable[FailedWire], limit: int) -> list[FailedWire]:
    """Up to ``limit`` of ``failures`` (several shards' samples, in order): the first of
    each cause, then the rest in order, kept in their order."""
    failures = list(failures)
    seen: set[str] = set()
    first: list[int] = []
    for i, failure in enumerate(failures):
        cause = cause_of(failure["reason"])
        if cause not in seen:
            seen.add(cause)
            first.append(i)
    chosen = set(first[:limit])
    for i in range(len(failures)):
        if len(chosen) >= limit:
            break
        chosen.add(i)
    return [failures[i] for i in sorted(chosen)]
