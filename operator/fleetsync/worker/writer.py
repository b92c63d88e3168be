"""Batches and dead letters to the sink; an item becomes final only once its write returned.

Every record ends in exactly one outcome, whatever the sink does:

- written / stale / refused per record (``WriteResult``): synced, stale, or dead-lettered
  with the sink's reason;
- the whole call raises :class:`~fleetsync.errors.SinkError` (an outage, throttling the sink
  gave up on): the batch is retried with the one backoff policy, a bounded number of times,
  and then every item in it is dead-lettered with the reason;
- any other exception (a value the sink's client library refuses, such as NaN for
  DynamoDB, or a bug): the batch is split in halves and each half written on its own, so one
  bad record fails one item and the rest of its batch is written.

Dead letters that cannot be written (the sink throttling) stay queued and are tried again
at the next flush; their items are not final until then. When they keep failing for
``_LETTER_ROUNDS`` flushes in a row the sink is unusable: ``on_sink_down`` ends the shard as
failed (its unfinished items stay out of the checkpoint for a replacement) rather than let
it wait forever. The flusher never dies: a round that fails is logged and the next one tries
again. At most ``sink.max_concurrent_writes`` writes are in flight. Batches leave full while
records keep coming; a partial one when the stream pauses or it has waited too long
(:meth:`~fleetsync.worker.batcher.Batcher.partial_due`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from fleetsync.api.constants import ItemOutcome
from fleetsync.backoff import Backoff
from fleetsync.errors import SinkError
from fleetsync.sinks.base import DeadLetter, Sink, WriteResult
from fleetsync.worker.batcher import Batcher, Entry, Letter
from fleetsync.worker.outcome import Books, Pending

__all__ = ["SINK_BACKOFF", "SinkWriter", "write_batch_size"]

log = logging.getLogger("fleetsync.worker")

_TICK_SECONDS = 0.05  # how often the flusher looks at the batch waiting and dead letters
# A partial batch nothing joined for this long is written: long enough that the stragglers
# of a wave of fetches (p99 latency) join it, short next to the report interval. The end of
# the shard does not wait for it (the engine flushes at once).
_LINGER_SECONDS = 0.2
_MAX_WAIT = 1.0  # ... and one whose records keep trickling in, once it waited this long
SINK_BACKOFF = Backoff(base=0.2, cap=5.0, jitter="full")
_BATCH_TRIES = 4  # for a batch that raised SinkError: then its items are dead-lettered
_LETTER_TRIES = 4  # per flush; letters not written are kept for the next one
_LETTER_ROUNDS = 3  # flushes in a row without a letter written: the sink is unusable


def write_batch_size(sink_batch: int, window: int | None) -> int:
    """Records per write: the sink's batch, but at most half the re-fetch window.

    The window bounds the items fetched and not yet checkpointed (a kill re-fetches at most
    that many), and its slots come back only once their batch is written and reported. A
    batch as large as the window could fill only when every slot was taken: fetching stopped
    for each write and report, the pipeline ran in lockstep (SQLite's 500 against a window
    of 500). Half the window lets one half fetch while the other is written and reported."""
    if window is None:
        return sink_batch
    return max(1, min(sink_batch, window // 2))


def dead_letter(pending: Pending, reason: str, attempts: int) -> DeadLetter:
    """The letter of one item; ``member`` is the item's place in the shard's inventory
    stream, so every member of a group sharing a key keeps its own letter."""
    return DeadLetter(
        key=pending.key,
        reason=reason,
        attempts=attempts,
        item=pending.item,
        failed_at=time.time(),
        member=str(pending.index),
    )


class SinkWriter:
    def __init__(
        self,
        sink: Sink,
        *,
        run: str,
        books: Books,
        rng: random.Random | None = None,
        on_durable: Callable[[], None] = lambda: None,
        on_sink_down: Callable[[str], None] = lambda reason: None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.run = run
        self.books = books
        self.batcher = Batcher(
            write_batch_size(sink.max_batch_size, books.window),
            linger=_LINGER_SECONDS,
            max_wait=_MAX_WAIT,
        )
        self._slots = asyncio.Semaphore(sink.max_concurrent_writes)
        self._stop = asyncio.Event()
        self._rng = rng or random.Random()
        self._on_durable = on_durable
        self._on_sink_down = on_sink_down
        self._letter_rounds_failed = 0
        self._sleep = sleep
        self._clock = clock

    async def add(self, entry: Entry) -> None:
        if self.batcher.add(entry, self._clock()):
            await self.flush()

    def dead_letter(self, pending: Pending, reason: str, *, attempts: int) -> None:
        self.batcher.add_letter(Letter(pending, dead_letter(pending, reason, attempts)))
        self.books.sample_failure(pending.key, reason, attempts)

    async def flush_loop(self) -> None:
        """Every ``_TICK_SECONDS``: dead letters, and a partial batch once it is due."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), _TICK_SECONDS)
            try:
                await self.flush(force=self.batcher.partial_due(self._clock()))
            except Exception:  # never let the flusher die: the next round tries again
                log.exception("flushing to the sink failed; retrying at the next round")

    def stop(self) -> None:
        """End :meth:`flush_loop` after its current round (never cancel it mid-write)."""
        self._stop.set()

    async def flush(self, *, force: bool = False) -> None:
        batches = self.batcher.cut(force=force)
        if batches:
            await asyncio.gather(*(self._write(batch) for batch in batches))
        letters = self.batcher.take_letters()  # with those a failed write just added
        if letters:
            await self._write_letters(letters)

    async def _write(self, batch: list[Entry]) -> None:
        failure: Exception | None = None
        for attempt in range(1, _BATCH_TRIES + 1):
            try:
                async with self._slots:
                    result = await self.sink.write_batch([e.record for e in batch])
            except SinkError as error:
                failure = error
                log.warning("sink write failed (try %d): %s", attempt, error)
                if attempt < _BATCH_TRIES:
                    await self._sleep(SINK_BACKOFF.delay(attempt, self._rng))
                continue
            except Exception as error:  # not an outage: a record it cannot take, or a bug
                failure = error
                break
            self._settle(batch, result)
            return
        if not isinstance(failure, SinkError) and len(batch) > 1:
            half = len(batch) // 2
            await asyncio.gather(self._write(batch[:half]), self._write(batch[half:]))
            return
        reason = f"sink: {type(failure).__name__}: {failure}"
        for entry in batch:
            self.dead_letter(entry.pending, reason, attempts=entry.attempts)

    def _settle(self, batch: list[Entry], result: WriteResult) -> None:
        stale, failed = set(result.stale), result.failed
        for entry in batch:
            key = entry.record.key
            if key in failed:
                # Every member of a merged group fails with it, each with its own letter.
                self.dead_letter(entry.pending, f"sink: {failed[key]}", attempts=entry.attempts)
            elif key in stale:
                self.books.finish(entry.pending.index, ItemOutcome.STALE)
            else:
                self.books.finish(entry.pending.index, ItemOutcome.SYNCED)
        self._on_durable()

    async def _write_letters(self, letters: list[Letter]) -> None:
        failure: Exception | None = None
        for attempt in range(1, _LETTER_TRIES + 1):
            try:
                async with self._slots:
                    await self.sink.write_dead_letters(self.run, [le.letter for le in letters])
            except Exception as error:
                failure = error
                log.warning("dead letters not written (try %d): %s", attempt, error)
                if attempt < _LETTER_TRIES:
                    await self._sleep(SINK_BACKOFF.delay(attempt, self._rng))
                continue
            for le in letters:
                self.books.finish(le.pending.index, ItemOutcome.FAILED)
            self._letter_rounds_failed = 0
            self._on_durable()
            return
        self.batcher.put_back_letters(letters)  # not final: the next flush tries again
        self._letter_rounds_failed += 1
        if self._letter_rounds_failed == _LETTER_ROUNDS:
            self._on_sink_down(
                f"dead letters could not be written ({type(failure).__name__}: {failure})"
            )
