"""Merge records that share a key inside one batch: the last by ``orderBy`` wins.

A DynamoDB BatchWriteItem and a PostgreSQL ``INSERT … ON CONFLICT`` both reject a batch
that touches one key twice, and seed 002's measurements arrive several per key. Order:
a record with an ``order_value`` beats one without; equal values → the later one in the
batch wins, so without ``orderBy`` the newest fetch wins.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from fleetsync.sinks.base import Record

__all__ = ["merge_batch"]


def _rank(record: Record) -> tuple[int, str | float | int]:
    value = record.order_value
    if value is None:
        return (0, 0)
    return (1, value)


def _beats(challenger: Record, holder: Record) -> bool:
    a, b = _rank(challenger), _rank(holder)
    if a[0] != b[0]:
        return a[0] > b[0]
    try:
        return a[1] >= b[1]  # type: ignore[operator]  # mixed types compare as text below
    except TypeError:
        return str(a[1]) >= str(b[1])


def merge_batch(
    records: Sequence[Record], key: Callable[[Record], Hashable] = lambda r: r.key
) -> tuple[list[Record], list[str]]:
    """(one record per key in first-seen order, keys of the records merged away)."""
    winners: dict[Hashable, Record] = {}
    superseded: list[str] = []
    for record in records:
        k = key(record)
        holder = winners.get(k)
        if holder is None:
            winners[k] = record
        elif _beats(record, holder):
            winners[k] = record
            superseded.append(holder.key)
        else:
            superseded.append(record.key)
    return list(winners.values()), superseded
