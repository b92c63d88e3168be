"""Batches and dead letters to the sink; an item becomes final only once its write returned.

At most ``sink.max_concurrent_writes`` writes are in flight. A background flusher writes
partial batches after a short linger so a slow trickle of items is not held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from fleetsync.api.constants import ItemOutcome
from fleetsync.sinks.base import DeadLetter, Sink
from fleetsync.worker.batcher import Batcher, Entry, Letter
from fleetsync.worker.outcome import Books, Pending

__all__ = ["SinkWriter"]

_LINGER_SECONDS = 0.05


class SinkWriter:
    def __init__(self, sink: Sink, *, run: str, books: Books) -> None:
        self.sink = sink
        self.run = run
        self.books = books
        self.batcher = Batcher(sink.max_batch_size)
        self._slots = asyncio.Semaphore(sink.max_concurrent_writes)
        self._stop = asyncio.Event()

    async def add(self, entry: Entry) -> None:
        if self.batcher.add(entry):
            await self.flush()

    def dead_letter(self, pending: Pending, reason: str, *, attempts: int) -> None:
        letter = DeadLetter(
            key=pending.key,
            reason=reason,
            attempts=attempts,
            item=pending.item,
            failed_at=time.time(),
        )
        self.batcher.add_letter(Letter(pending, letter))
        self.books.sample_failure(pending.key, reason, attempts)

    async def flush_loop(self) -> None:
        """Linger: a partial batch waits at most this long for company before it is written."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), _LINGER_SECONDS)
            await self.flush(force=True)

    def stop(self) -> None:
        """End :meth:`flush_loop` after its current round (never cancel it mid-write)."""
        self._stop.set()

    async def flush(self, *, force: bool = False) -> None:
        batches = self.batcher.cut(force=force)
        if batches:
            await asyncio.gather(*(self._write(batch) for batch in batches))
        letters = self.batcher.take_letters()  # with those a failed write just added
        if letters:
            async with self._slots:
                await self.sink.write_dead_letters(self.run, [le.letter for le in letters])
            for le in letters:
                self.books.finish(le.pending.index, ItemOutcome.FAILED)

    async def _write(self, batch: list[Entry]) -> None:
        async with self._slots:
            result = await self.sink.write_batch([e.record for e in batch])
        stale, failed = set(result.stale), result.failed
        for entry in batch:
            key = entry.record.key
            if key in failed:
                self.dead_letter(entry.pending, f"sink: {failed[key]}", attempts=1)
            elif key in stale:
                self.books.finish(entry.pending.index, ItemOutcome.STALE)
            else:
                self.books.finish(entry.pending.index, ItemOutcome.SYNCED)
