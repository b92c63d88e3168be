"""The contract every sink keeps, so the engine batches, merges and retries the same way
whether records land in SQLite, PostgreSQL or DynamoDB.

A sink owns its own table(s): the records table, ``<table>_dead_letters`` (DynamoDB:
``DLQ#<run>`` items in the same table). Alongside the user's attributes each record row
carries three bookkeeping attributes the engine needs for change detection and freshness:
``_fs_hash`` (hash of the mapped attributes), ``_fs_synced_at`` (epoch seconds, float) and,
when ``monotonicOn`` is set, the monotonic attribute itself (a user attribute).

A dead letter's identity is (run, key, member): items grouped by key (``orderBy``) fail one
by one, and each must be kept and retried, so the engine gives each a ``member`` id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable

__all__ = ["DeadLetter", "JSONValue", "Record", "RecordState", "Sink", "SinkCost", "WriteResult"]

# JSON-compatible scalar values that mapped attributes may hold. Nested dicts/lists are
# stored as JSON text by SQLite/PostgreSQL and as maps/lists by DynamoDB.
Scalar: TypeAlias = str | int | float | bool | None
JSONValue: TypeAlias = Scalar | list["JSONValue"] | dict[str, "JSONValue"]


@dataclass(frozen=True, slots=True)
class Record:
    """One item's mapped state, ready to write.

    ``key`` is the value of the fleet's key field as text. ``item`` is the inventory item
    (used by key templates such as ``PLANT#{id}``). ``order_value`` is the item's
    ``orderBy`` value (None when unset): when a batch holds the same key twice, the record
    with the greatest ``order_value`` wins (ties: the later one in the batch).
    ``monotonic_value`` is the value of the ``monotonicOn`` attribute: a write whose value
    is older than the stored one is dropped and reported as stale.
    """

    key: str
    attributes: Mapping[str, JSONValue]
    item: Mapping[str, JSONValue]
    content_hash: str
    synced_at: float
    order_value: str | float | int | None = None
    monotonic_value: str | float | int | None = None


@dataclass(frozen=True, slots=True)
class RecordState:
    """What the sink remembers of a key, for change detection and ``freshFor``."""

    content_hash: str | None
    synced_at: float | None
    monotonic_value: str | float | int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An item that kept failing: the user can read it and ``fleetsync retry-failed`` it.

    ``member`` tells apart items that share a key (a group under ``orderBy``): the engine
    sets it to a stable per-item id (the item's position in its shard's inventory stream).
    Letters written before members existed read back with ``member == ""``.
    """

    key: str
    reason: str
    attempts: int
    item: Mapping[str, JSONValue]
    failed_at: float
    member: str = ""


@dataclass(slots=True)
class WriteResult:
    """Outcome of one ``write_batch``: every input key is in exactly one of the three."""

    written: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason


@dataclass(slots=True)
class SinkCost:
    """Cumulative cost: every call made to the sink (reads included) and capacity units."""

    calls: int = 0
    write_units: float = 0.0
    read_units: float = 0.0
    unprocessed_items: int = 0
    throttles: int = 0


@runtime_checkable
class Sink(Protocol):
    """A batched store of records. Implementations are async; blocking clients run in threads.

    ``write_batch`` receives at most ``max_batch_size`` records and must itself merge
    duplicate keys (last by ``order_value``), retry transient refusals (DynamoDB
    UnprocessedItems, throttling) with jittered backoff, and report what it could not
    write in ``WriteResult.failed`` rather than raise. It raises only when the whole sink
    is unusable (:class:`fleetsync.errors.SinkError`): transient failures (throttling,
    connection resets, 5xx, a database restart) are retried within a bounded budget first,
    and a record the sink cannot store (NaN, a number or value the store refuses) fails that
    record alone. After a SinkError nothing is known about the batch; writing it again is
    safe (every write is an idempotent upsert).
    """

    max_batch_size: int
    max_concurrent_writes: int  # batches the engine may have in flight at once

    @property
    def cost(self) -> SinkCost: ...

    async def open(self) -> None:
        """Connect, and create the tables if the sink may (SQLite, PostgreSQL)."""

    async def close(self) -> None: ...

    async def read_state(self, keys: Sequence[str]) -> Mapping[str, RecordState]:
        """The stored state of ``keys`` (absent keys are missing from the result)."""

    async def write_batch(self, records: Sequence[Record]) -> WriteResult: ...

    async def write_dead_letters(self, run: str, letters: Sequence[DeadLetter]) -> None:
        """Upsert dead letters of ``run`` (keyed by run, item key and member)."""

    async def read_dead_letters(self, run: str, limit: int | None = None) -> list[DeadLetter]:
        """Every member of every key, ordered by key then member."""

    async def clear_dead_letters(self, run: str, keys: Sequence[str]) -> None:
        """Forget dead letters whose items have since been synced: all members of ``keys``."""
