"""The fault suite: real servers with chaos in front, one set per session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

here = Path(__file__).resolve().parent
sys.path[:0] = [str(here.parent), str(here)]

from servers import Servers, fault_servers  # noqa: E402


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with fault_servers() as s:
        yield s
