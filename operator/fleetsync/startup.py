"""A command's start without the cyclic garbage collector, as CPython's ``gc.freeze``
documentation describes for a process that builds a large long-lived heap and then serves.

Importing the stack and building the v1alpha1 models allocates ~80,000 objects that live as
long as the process. The collector's ~120 passes over them while they are made free almost
nothing (a ~2,000-object remnant of cycles) and cost ~0.035 s of CPU: 5 % of a 500-item
``fleetsync run`` (bench/results.md, issue 17). So ``run``, ``demo`` and ``worker`` call
:func:`hold` first, and :func:`~fleetsync.worker.loop.run_loop` calls :func:`release` as the
event loop starts: everything the start built moves to the permanent generation, which no
later pass walks either, and the collector runs as usual from there. The price is that
remnant, kept for the process's life (~1 MB of RSS, once). ``main`` releases the collector
without freezing for a command that ends, or fails, before its loop.

The controller does not hold it: kopf's loop is not started by :func:`release`.
"""

from __future__ import annotations

import gc

__all__ = ["hold", "release"]


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
