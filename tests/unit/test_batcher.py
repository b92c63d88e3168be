"""The batcher cuts full batches while records keep coming (issue 17 item 3: every partial
batch is one more sink call) and lets a partial batch go only when the stream pauses or its
records waited long enough."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetsync.sinks.base import Record
from fleetsync.worker.batcher import Batcher, Entry
from fleetsync.worker.outcome import Pending

LINGER, MAX_WAIT, SIZE = 0.2, 1.0, 25


def entry(i: int) -> Entry:
    pending = Pending(index=i, key=f"p-{i}", item={"id": f"p-{i}"})
    return Entry(pending, Record(f"p-{i}", {}, pending.item, content_hash="", synced_at=0.0))


def simulate(gaps: list[float], tick: float = 0.05) -> list[int]:
    """Feed records ``gaps`` apart, run the flusher's check every ``tick`` as the writer does,
    flush the rest at the end; the sizes of the batches written, in order."""
    batcher = Batcher(SIZE, linger=LINGER, max_wait=MAX_WAIT)
    sizes: list[int] = []
    now, next_tick = 0.0, tick
    for i, gap in enumerate(gaps):
        arrival = now + gap
        while next_tick <= arrival:  # the writer's flusher: a cut every tick, forced when due
            sizes += [len(b) for b in batcher.cut(force=batcher.partial_due(next_tick))]
            next_tick += tick
        now = arrival
        if batcher.add(entry(i), now):
            sizes += [len(b) for b in batcher.cut(force=False)]
    sizes += [len(b) for b in batcher.cut(force=True)]
    return sizes


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=LINGER * 0.9), min_size=1, max_size=400))
def test_a_steady_stream_fills_every_batch_but_the_last(gaps: list[float]) -> None:
    # Records never more than LINGER apart, and a whole batch arrives within MAX_WAIT.
    gaps = [min(g, MAX_WAIT / SIZE * 0.9) for g in gaps]
    sizes = simulate(gaps)
    assert sum(sizes) == len(gaps)
    assert all(size == SIZE for size in sizes[:-1])


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=3.0), min_size=1, max_size=300))
def test_no_record_waits_past_max_wait_plus_a_tick_and_none_is_lost(gaps: list[float]) -> None:
    batcher = Batcher(SIZE, linger=LINGER, max_wait=MAX_WAIT)
    arrived: dict[int, float] = {}
    now, tick, written = 0.0, 0.05, 0
    for i, gap in enumerate(gaps):
        target = now + gap
        while now + tick <= target:
            now += tick
            for batch in batcher.cut(force=batcher.partial_due(now)):  # as the flusher does
                written += len(batch)
                assert all(now - arrived[e.pending.index] <= MAX_WAIT + tick for e in batch)
            # Nothing still waiting is older than the bound.
            assert not batcher.partial_due(now)
        now = target
        arrived[i] = now
        if batcher.add(entry(i), now):
            written += sum(len(b) for b in batcher.cut(force=False))
    written += sum(len(b) for b in batcher.cut(force=True))
    assert written == len(gaps)


def test_a_pause_lets_the_partial_batch_go_and_a_trickle_is_cut_at_max_wait() -> None:
    assert simulate([0.01] * 30 + [0.5] + [0.01] * 5) == [25, 5, 6]
    # One record every 0.15 s never pauses LINGER long: batches of about MAX_WAIT / 0.15.
    sizes = simulate([0.15] * 40)
    assert sum(sizes) == 40 and max(sizes) <= 8 and min(sizes[:-1]) >= 6


def test_nothing_is_due_when_empty() -> None:
    assert not Batcher(SIZE).partial_due(100.0)
