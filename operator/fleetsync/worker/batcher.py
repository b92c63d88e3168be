"""Records and dead letters waiting for the sink, cut into batches of the sink's size.

Pure bookkeeping: no I/O. A record stays here, with the item it came from, until the
writer takes its batch; the writer then owns it until it has an outcome. Dead letters the
sink would not take are handed back (:meth:`Batcher.put_back_letters`) for the next flush.
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
    def __init__(self, size: int) -> None:
        self.size = size
        self._records: list[Entry] = []
        self._letters: list[Letter] = []

    def add(self, entry: Entry) -> bool:
        """Queue a record; True when a full batch is waiting."""
        self._records.append(entry)
        return len(self._records) >= self.size

    def add_letter(self, letter: Letter) -> None:
        self._letters.append(letter)

    def cut(self, *, force: bool) -> list[list[Entry]]:
        """Full batches (and with ``force`` the partial rest), taken out in arrival order."""
        batches = []
        while self._records and (force or len(self._records) >= self.size):
            batches.append(self._records[: self.size])
            self._records = self._records[self.size :]
        return batches

    def take_letters(self) -> list[Letter]:
        letters, self._letters = self._letters, []
        return letters

    def put_back_letters(self, letters: list[Letter]) -> None:
        self._letters[:0] = letters

    @property
    def waiting(self) -> int:
        return len(self._records) + len(self._letters)
