"""Servers for the integration suite, one per session: PostgreSQL and a DynamoDB-protocol
server (moto), both real processes on loopback, stopped at the end."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.dynamodb import FaultProxy, moto_server
from support.postgres import postgres_server


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
async def dynamodb_faults(dynamodb_endpoint: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(dynamodb_endpoint)
    await proxy.start()
    yield proxy
    await proxy.stop()
