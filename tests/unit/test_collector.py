"""A shard process's collector setting (issue 17): rarer cyclic collections, cycles still freed.

Each check runs in a fresh interpreter: the setting is process-wide and freezes what exists.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fleetsync.collector import SHARD_GEN0_THRESHOLD


def _in_fresh_interpreter(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


PRELUDE = "import gc, json, weakref\nfrom fleetsync.collector import tune_for_shards\n"


def test_the_threshold_is_raised_and_the_setup_frozen_once() -> None:
    seen = _in_fresh_interpreter(
        PRELUDE
        + "tune_for_shards()\nfrozen = gc.get_freeze_count()\nkept = [[] for _ in range(1000)]\n"
        "tune_for_shards()\n"
        "print(json.dumps({'threshold': gc.get_threshold()[0], 'frozen': frozen,"
        " 'again': gc.get_freeze_count()}))"
    )
    assert seen["threshold"] == SHARD_GEN0_THRESHOLD
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 1000  # the imports
    assert seen["again"] == seen["frozen"]  # a second call froze nothing more


@pytest.mark.parametrize(("before", "after"), [(50_000, 50_000), (0, 0)])
def test_a_setting_made_beforehand_is_kept(before: int, after: int) -> None:
    seen = _in_fresh_interpreter(
        PRELUDE + f"gc.set_threshold({before})\ntune_for_shards()\n"
        "print(json.dumps({'threshold': gc.get_threshold()[0]}))"
    )
    assert seen["threshold"] == after


def test_cycles_made_by_a_running_shard_are_still_freed() -> None:
    # Items' cyclic garbage (a dict holding itself, say) must not accumulate: with no explicit
    # gc.collect(), allocating as a shard does frees the first cycle within a few thresholds.
    seen = _in_fresh_interpreter(
        PRELUDE + "tune_for_shards()\n"
        "class Node:\n    pass\n"
        "first = Node(); first.me = first; alive = weakref.ref(first); del first\n"
        "for _ in range(10 * 10_000):\n    n = Node(); n.me = n\n"
        "print(json.dumps({'freed': alive() is None, 'garbage': len(gc.garbage)}))"
    )
    assert seen == {"freed": True, "garbage": 0}
