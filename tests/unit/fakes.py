"""In-memory sinks and coordinators that misbehave on purpose, for the engine's integrity
tests: a sink that raises on chosen batches, one that cannot take a value, one that
throttles dead letters; a coordinator that keeps every checkpoint it was sent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from conftest import MemorySink

from fleetsync.api.progress import CheckpointWire, ReplyWire, ReportWire
from fleetsync.errors import SinkError
from fleetsync.sinks.base import DeadLetter, Record, RecordState, WriteResult


class FaultySink(MemorySink):
    """A MemorySink that, on purpose:

    - raises SinkError on the write calls numbered in ``outage`` (1-based, retries count),
      and on every write of a batch holding a key in ``down_for``;
    - raises TypeError for a whole batch holding a key in ``poison`` (as boto3's serializer
      does for a NaN), without writing any of it;
    - raises SinkError on the first ``letter_outages`` dead-letter writes;
    - raises SinkError on every state read from the ``state_down_from``-th on (1-based).

    Every dead letter ever written is kept in ``letter_log`` (the dict keeps the last per
    key, like a sink whose letters have no member).
    """

    def __init__(
        self,
        *,
        outage: Sequence[int] = (),
        down_for: Sequence[str] = (),
        poison: Sequence[str] = (),
        letter_outages: int = 0,
        state_down_from: int | None = None,
        batch_size: int = 25,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.max_batch_size = batch_size
        self.outage = set(outage)
        self.poison = set(poison)
        self.down_for = set(down_for)
        self.letter_outages = letter_outages
        self.state_down_from = state_down_from
        self.state_reads = 0
        self.write_calls = 0
        self.letter_log: list[DeadLetter] = []

    async def read_state(self, keys: Sequence[str]) -> Mapping[str, RecordState]:
        self.state_reads += 1
        if self.state_down_from is not None and self.state_reads >= self.state_down_from:
            raise SinkError("postgres plants: read state: still failing after 16 attempts")
        return await super().read_state(keys)

    async def write_batch(self, records: Sequence[Record]) -> WriteResult:
        self.write_calls += 1
        if self.write_calls in self.outage:
            raise SinkError(f"injected outage on write {self.write_calls}")
        if any(record.key in self.down_for for record in records):
            raise SinkError("injected outage")
        if any(record.key in self.poison for record in records):
            raise TypeError("Infinity and NaN not supported")
        return await super().write_batch(records)

    async def write_dead_letters(self, run: str, letters: Sequence[DeadLetter]) -> None:
        if self.letter_outages > 0:
            self.letter_outages -= 1
            raise SinkError("injected throttling of dead letters")
        self.letter_log += letters
        await super().write_dead_letters(run, letters)


class KeepingCoordinator:
    """Takes every report, like a coordinator that keeps them; remembers each checkpoint
    in the order it was acknowledged, and hands ``resume`` to a starting shard."""

    keeps_reports = True

    def __init__(self, resume: CheckpointWire | None = None) -> None:
        self.resume = resume
        self.reports: list[ReportWire] = []

    @property
    def checkpoint(self) -> CheckpointWire | None:
        kept = [r["checkpoint"] for r in self.reports if r["checkpoint"] is not None]
        return kept[-1] if kept else None

    async def report(self, report: ReportWire) -> ReplyWire | None:
        self.reports.append(report)
        resume = self.resume if report["state"] == "starting" else None
        return ReplyWire(grants={}, breakers={}, stop=False, resume=resume)

    async def aclose(self) -> None:
        return None
