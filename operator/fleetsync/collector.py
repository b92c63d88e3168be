"""The cyclic garbage collector's settings for fleetsync's processes (issue 17).

**Through a command's start** (:func:`hold`, :func:`release`), as CPython's ``gc.freeze``
documentation describes for a process that builds a large long-lived heap and then serves:
importing the stack and building the v1alpha1 models allocates ~80,000 objects that live as
long as the process. The collector's ~120 passes over them while they are made free almost
nothing (a ~2,000-object remnant of cycles) and cost ~0.035 s of CPU: 5 % of a 500-item
``fleetsync run``. So ``run``, ``demo`` and ``worker`` call :func:`hold` first, and
:func:`~fleetsync.worker.loop.run_loop` calls :func:`release` as the event loop starts:
everything the start built moves to the permanent generation, which no later pass walks
either, and the collector runs from there. The price is that remnant, kept for the
process's life (~1 MB of RSS, once). ``main`` releases the collector without freezing for a
command that ends, or fails, before its loop. The controller does not hold it.

**While shards run** (:func:`tune_for_shards`): an item in flight allocates a few dozen
container objects (its dicts, request, response, coroutine frames) that reference counting
frees on its own. At CPython's default generation-0 threshold (700 allocations) the cyclic
collector ran every few items and walked every live object of the younger generations each
time, and the older generation's walks went over the whole import graph: ~10 % of a shard's
CPU (20,000 items over the 50 ms simulator, one shard, 7.3 s -> 6.5 s; bench/results.md).
Freezing what exists once the process is set up takes the imports out of every later walk,
and a higher threshold makes the walks rarer. Cycles are still collected: the collector
runs, less often.

A top-level module: the CLI imports it, and ``--help`` must not import ``fleetsync.worker``
(aiohttp).
"""

from __future__ import annotations

import functools
import gc

__all__ = ["SHARD_GEN0_THRESHOLD", "hold", "release", "tune_for_shards"]

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


class _Pause:
    held = False  # hold() turned the collector off and release() has not turned it back on


def hold() -> None:
    """Pause the cyclic collector for the rest of the start (not if it was already off)."""
    if not _Pause.held and gc.isenabled():
        gc.disable()
        _Pause.held = True


def release(*, freeze: bool = True) -> None:
    """End :func:`hold`: freeze what the start built (``freeze``) and collect as usual again.
    Nothing happens unless :func:`hold` paused the collector."""
    if _Pause.held:
        _Pause.held = False
        if freeze:
            gc.freeze()
        gc.enable()
