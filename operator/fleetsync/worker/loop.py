"""The event loop a shard's process runs on: uvloop where it is installed, else asyncio's.

A shard is CPU-bound in its one event loop (bench/results.md: ~300 µs of CPU per item over
the 50 ms simulator, aiohttp's request path the largest part). uvloop (libuv under asyncio's
API, kept by the asyncio maintainers' MagicStack) takes ~3 % of that off, same code, same
client: 20,000 items on one shard 6.2 s -> 6.0 s. It installs on Linux and macOS (the
dependency is marked so); elsewhere the standard loop runs the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fleetsync import collector

__all__ = ["run_loop"]

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on uvloop when it can be imported."""
    collector.release()  # the start is over: fleetsync/collector.py
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
