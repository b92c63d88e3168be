"""The cyclic garbage collector's setting for a process that runs shards.

An item in flight allocates a few dozen container objects (its dicts, request, response,
coroutine frames) that reference counting frees on its own. At CPython's default generation-0
threshold (700 allocations) the cyclic collector ran every few items and walked every live
object of the younger generations each time, and the older generation's walks went over the
whole import graph: ~10 % of a shard's CPU (20,000 items over the 50 ms simulator, one shard,
7.3 s -> 6.5 s; bench/results.md). Freezing what exists once the process is set up takes the
imports out of every later walk, and a higher threshold makes the walks rarer. Cycles are
still collected: the collector runs, less often.
"""

from __future__ import annotations

import functools
import gc

__all__ = ["SHARD_GEN0_THRESHOLD", "tune_for_shards"]

SHARD_GEN0_THRESHOLD = 10_000


@functools.cache  # once per process: a second freeze would pin a running shard's objects
def tune_for_shards() -> None:
    """Freeze the objects alive now (modules, the parsed manifest) and raise the gen-0
    threshold to :data:`SHARD_GEN0_THRESHOLD`, once per process. A threshold set higher
    beforehand (or the collector disabled, threshold 0) is left as it is."""
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    if 0 < gen0 < SHARD_GEN0_THRESHOLD:
        gc.set_threshold(SHARD_GEN0_THRESHOLD, gen1, gen2)
