"""Checkpoints: resume exactly where a shard stopped, and never count an item twice."""

from __future__ import annotations

import json
import random

from fleetsync.worker.checkpoint import CheckpointTracker


def test_watermark_advances_over_out_of_order_completions() -> None:
    tracker = CheckpointTracker()
    for index in (2, 0, 3):
        tracker.finish(index, "synced")
    assert tracker.watermark == 0
    tracker.finish(1, "failed")
    assert tracker.watermark == 3
    assert tracker.counts == {"synced": 3, "failed": 1}


def test_snapshot_round_trips_through_json_and_resumes() -> None:
    rng = random.Random(7)
    order = list(range(5000))
    rng.shuffle(order)
    tracker = CheckpointTracker()
    done = set(order[:3000])
    for index in order[:3000]:
        tracker.finish(index, "synced" if index % 7 else "unchanged")
    snapshot = json.loads(json.dumps(tracker.snapshot()))
    resumed = CheckpointTracker(snapshot)
    assert all(resumed.is_final(i) == (i in done) for i in range(5000))
    assert sum(resumed.counts.values()) == 3000
    # Re-delivered items (processed again after a crash) are not counted again.
    resumed.finish(order[0], "synced")
    assert sum(resumed.counts.values()) == 3000


def test_snapshot_size_is_bounded_by_the_gap_not_the_fleet() -> None:
    tracker = CheckpointTracker()
    for index in range(100_000):
        if index != 50:
            tracker.finish(index, "synced")
    # 99,949 items above a single missing one: a bitmap, about 12.5 kB, not a list of ints.
    assert len(json.dumps(tracker.snapshot())) < 20_000
    tracker.finish(50, "synced")
    assert tracker.snapshot()["above"] == ""
