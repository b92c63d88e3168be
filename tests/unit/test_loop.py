"""A shard's process runs on uvloop where it is installed, and on asyncio's loop otherwise;
its start runs without the cyclic collector, which the loop's start gives back."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetsync import collector
from fleetsync.api.constants import ExitCode
from fleetsync.cli import main
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


# A command's start runs without the cyclic collector; the loop's start freezes what it built
# and turns the collector back on (fleetsync/collector.py).


async def _collector() -> tuple[bool, int]:
    return gc.isenabled(), gc.get_freeze_count()


@pytest.fixture
def gc_restored() -> Iterator[None]:
    """Leaves the test process's collector as it found it: on, nothing frozen by the test."""
    frozen = gc.get_freeze_count()
    yield
    collector.release(freeze=False)
    gc.enable()
    if gc.get_freeze_count() > frozen:
        gc.unfreeze()


@pytest.mark.usefixtures("gc_restored")
def test_the_loop_starts_with_the_collector_on_and_the_start_frozen() -> None:
    frozen = gc.get_freeze_count()
    collector.hold()
    assert not gc.isenabled()
    enabled, frozen_in_loop = run_loop(_collector())
    assert enabled
    assert frozen_in_loop > frozen  # the start's objects: no later pass walks them
    assert gc.isenabled()


@pytest.mark.usefixtures("gc_restored")
def test_a_loop_without_hold_leaves_the_collector_as_the_caller_set_it() -> None:
    frozen = gc.get_freeze_count()
    gc.disable()  # a caller's choice, not ours: not turned on, nothing frozen
    collector.hold()
    assert run_loop(_collector()) == (False, frozen)
    collector.release()
    assert not gc.isenabled()


@pytest.mark.usefixtures("gc_restored")
def test_a_run_that_fails_before_its_loop_gives_the_collector_back(tmp_path: Path) -> None:
    frozen = gc.get_freeze_count()
    code = main(["run", str(tmp_path / "missing.yaml"), "--state-dir", str(tmp_path / "st")])
    assert code == ExitCode.INVALID_CONFIG
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
