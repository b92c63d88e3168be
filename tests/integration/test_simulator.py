"""The vendor simulator as a real server on loopback: what tests and benchmarks rely on."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from fleetsync.simulator import (
    Simulator,
    SimulatorConfig,
    SimulatorProcess,
    VendorConfig,
    expected_payload,
    is_malformed,
)

pytestmark = pytest.mark.integration

FAST = {"latency": {"p50Ms": 0, "p99Ms": 0}}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimulatorConfig.model_validate(
        {
            "vendors": {
                "fast": FAST,
                "limited": {**FAST, "rateLimit": {"requestsPerSecond": 10}},
                "down": {**FAST, "outages": [{"startSeconds": 0, "endSeconds": 3600}]},
                "broken": {**FAST, "malformedRate": 0.3},
                "secured": {
                    **FAST,
                    "oauth2": {"clientId": "c", "clientSecret": "s", "tokenTtlSeconds": 0.5},
                },
                "listing": {**FAST, "inventory": {"count": 25, "pageSize": 10}},
            }
        }
    )
    simulator = Simulator(config)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, trust_env=False) as c:
        yield c


async def test_payloads_are_deterministic(client: httpx.AsyncClient) -> None:
    response = await client.get("/vendors/fast/plants/p-1/realtime")
    assert response.status_code == 200
    assert response.json() == expected_payload("fast", "p-1")


async def test_rate_limit_answers_429_with_retry_after_and_counts_per_second(
    client: httpx.AsyncClient,
) -> None:
    codes = []
    for i in range(30):
        response = await client.get(f"/vendors/limited/plants/p-{i}")
        codes.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
    assert 429 in codes
    stats = (await client.get("/_sim/stats")).json()["vendors"]["limited"]
    assert stats["total"] == 30
    assert stats["maxPerSecond"] <= 10
    assert sum(stats["perSecond"].values()) == 30
    assert stats["byStatus"]["429"] == codes.count(429)


async def test_etag_gives_304(client: httpx.AsyncClient) -> None:
    first = await client.get("/vendors/fast/plants/p-2")
    again = await client.get(
        "/vendors/fast/plants/p-2", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304


async def test_outage_window_answers_503(client: httpx.AsyncClient) -> None:
    assert (await client.get("/vendors/down/plants/p-1")).status_code == 503


async def test_malformed_ids_are_a_stable_fraction(client: httpx.AsyncClient) -> None:
    bad = [i for i in range(200) if is_malformed("broken", f"p-{i}", 0.3)]
    assert 30 < len(bad) < 90
    for i in bad[:5]:
        response = await client.get(f"/vendors/broken/plants/p-{i}")
        assert response.status_code == 200
        try:
            body = response.json()
        except ValueError:
            continue  # not JSON at all
        assert body["data"].get("power") is None
    good = next(i for i in range(200) if i not in bad)
    assert (await client.get(f"/vendors/broken/plants/p-{good}")).json() == expected_payload(
        "broken", f"p-{good}"
    )


async def test_oauth2_client_credentials(client: httpx.AsyncClient) -> None:
    assert (await client.get("/vendors/secured/plants/p-1")).status_code == 401
    refused = await client.post(
        "/vendors/secured/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "c", "client_secret": "wrong"},
    )
    assert refused.status_code == 401
    token = (
        await client.post(
            "/vendors/secured/oauth/token",
            data={"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"},
        )
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/vendors/secured/plants/p-1", headers=headers)).status_code == 200
    await asyncio.sleep(0.6)  # the token lives 0.5 s
    assert (await client.get("/vendors/secured/plants/p-1", headers=headers)).status_code == 401


async def test_pagination_lists_every_id_once(client: httpx.AsyncClient) -> None:
    ids: list[str] = []
    url: str | None = "/vendors/listing/inventory"
    for _ in range(10):
        if url is None:
            break
        page = (await client.get(url)).json()
        ids += [item["id"] for item in page["items"]]
        url = page["next"]
    assert url is None
    assert ids == [f"listing-{i}" for i in range(25)]


async def test_vendors_can_be_changed_at_run_time(client: httpx.AsyncClient) -> None:
    response = await client.patch("/_sim/vendors/fast", json={"errorRate": 1.0})
    assert response.status_code == 200
    assert (await client.get("/vendors/fast/plants/p-9")).status_code in (500, 503)
    bad = await client.patch("/_sim/vendors/fast", json={"errorRate": 2})
    assert bad.status_code == 400


def test_the_process_starts_serves_and_stops() -> None:
    config = SimulatorConfig(vendors={"v": VendorConfig.model_validate(FAST)})
    with SimulatorProcess(config) as sim:
        response = httpx.get(f"{sim.url}/vendors/v/plants/p-1", trust_env=False)
        assert response.json() == expected_payload("v", "p-1")
        assert sim.stats()["vendors"]["v"]["total"] == 1
        process = sim._process
    assert process is not None and process.poll() is not None


def test_a_bad_option_is_a_usage_error_exit_64() -> None:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "fleetsync", "simulate", "--error-rate", "2"],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 64
    assert "--error-rate" in out.stderr
    assert time.monotonic() - started < 30
