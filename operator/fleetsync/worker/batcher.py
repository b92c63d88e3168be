"""Records and dead letters waiting for the sink, cut into batches of the sink's size.

Pure bookkeeping: no I/O. A record stays here, with the item it came from, until the
writer takes its batch; the writer then owns it until it has an outcome. Dead letters the
sink would not take are handed back (:meth:`Batcher.put_back_letters`) for the next flush.

Batches are cut full while records keep coming: every partial batch is one more sink call
(DynamoDB: 25 records per BatchWriteItem, issue 17 item 3; a 50 ms timer cut 93 batches
where 80 would do). A partial batch leaves only when the stream pauses (nothing joined it
for ``linger`` seconds: the shard's end, a slow vendor) or its oldest record has waited
``max_wait`` seconds (a trickle under a rate limit must still become durable).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetsync.sinks.base import DeadLetter, Record
from fleetsync.worker.outcome import Pending

__all__ = ["Batcher", "Entry", "Letter"]


@dataclass(frozen=True, slots=True)
class Entry:
    pending: Pending
    record: Record
    attempts: int = 1  # the fetch's, for a dead letter should the write fail


@dataclass(frozen=True, slots=True)
class Letter:
    pending: Pending
    letter: DeadLetter


class Batcher:
    def __init__(self, size: int, *, linger: float = 0.05, max_wait: float = 1.0) -> None:
        self.size = size
        self.linger = linger
        self.max_wait = max_wait
        self._records: list[Entry] = []
        self._letters: list[Letter] = []
        self._last_added = 0.0  # when the latest record joined
        self._partial_since = 0.0  # when the partial batch now waiting began (about)

    def add(self, entry: Entry, now: float = 0.0) -> bool:
        """Queue a record that arrived at ``now``; True when a full batch is waiting."""
        if not self._records:
            self._partial_since = now
        self._records.append(entry)
        self._last_added = now
        return len(self._records) >= self.size

    def partial_due(self, now: float) -> bool:
        """Whether the partial batch waiting should be written now rather than filled."""
        if not self._records:
            return False
        idle = now - self._last_added >= self.linger
        return idle or now - self._partial_since >= self.max_wait

    def add_letter(self, letter: Letter) -> None:
        self._letters.append(letter)

    def cut(self, *, force: bool) -> list[list[Entry]]:
        """Full batches (and with ``force`` the partial rest), taken out in arrival order."""
        batches = []
        while self._records and (force or len(self._records) >= self.size):
            batches.append(self._records[: self.size])
            self._records = self._records[self.size :]
        if batches and self._records:  # the rest began a new batch no earlier than the last
            self._partial_since = max(self._partial_since, self._last_added)  # arrival
        return batches

    def take_letters(self) -> list[Letter]:
        letters, self._letters = self._letters, []
        return letters

    def put_back_letters(self, letters: list[Letter]) -> None:
        self._letters[:0] = letters

    @property
    def waiting(self) -> int:
        return len(self._records) + len(self._letters)
