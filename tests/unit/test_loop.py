"""A shard's process runs on uvloop where it is installed, and on asyncio's loop otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from fleetsync.worker.loop import run_loop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not installed on Windows")
def test_a_shard_runs_on_uvloop_where_it_is_installed() -> None:
    assert run_loop(_loop_module()).startswith("uvloop")


def test_without_uvloop_the_standard_loop_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert run_loop(_loop_module()).startswith("asyncio")
