"""HTTP client requests/s against the simulator: why the engine's transport matters.
httpx's own pool, aiohttp, and httpx over the aiohttp transport (what fleetsync uses), in the
same rounds; aiohttp is the baseline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from bench.common import Settings, interleave, ratios, spread, spread_x, vendor
from fleetsync.simulator import SimulatorConfig, SimulatorProcess

KINDS = ("aiohttp", "httpx+aiohttp", "httpx")


async def _rate(kind: str, url: str, concurrency: int, seconds: float) -> float:
    done = 0
    stop = time.monotonic() + seconds

    async def loop(get: Callable[[str], Any]) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            await get(f"{url}/p-{i}")
            i += 1
            done += 1

    if kind == "aiohttp":
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def get(u: str) -> None:
                async with session.get(u) as r:
                    await r.read()

            await asyncio.gather(*(loop(get) for _ in range(concurrency)))
    else:
        transport = AiohttpTransport() if kind == "httpx+aiohttp" else None
        limits = httpx.Limits(max_connections=concurrency * 2)
        async with httpx.AsyncClient(transport=transport, limits=limits, trust_env=False) as c:

            async def hget(u: str) -> None:
                (await c.get(u)).read()

            await asyncio.gather(*(loop(hget) for _ in range(concurrency)))
    return done / seconds


def _runner(kind: str, url: str, concurrency: int, seconds: float) -> Callable[[], float]:
    return lambda: asyncio.run(_rate(kind, url, concurrency, seconds))


def case_clients(settings: Settings) -> list[str]:
    seconds = 1.0 if settings.scale < 1 else 2.0
    config = SimulatorConfig(vendors={"zero": vendor(0), "fifty": vendor(50)})
    lines = [
        "## 6. HTTP client requests/s against the simulator (higher is better)",
        "",
        "| vendor latency | concurrency | aiohttp | httpx + aiohttp transport (fleetsync's) | httpx | transport / aiohttp |",
        "|---|---|---|---|---|---|",
    ]
    with SimulatorProcess(config) as sim:
        for name, latency in (("zero", 0), ("fifty", 50)):
            for concurrency in (16, 256):
                url = f"{sim.url}/vendors/{name}/plants"
                # interleave() reports seconds; here each "case" reports a rate instead.
                r = interleave(
                    settings.repeat, {k: _runner(k, url, concurrency, seconds) for k in KINDS}
                )
                lines.append(
                    f"| {latency} ms | {concurrency} | {spread(r['aiohttp'], '.0f')} "
                    f"| {spread(r['httpx+aiohttp'], '.0f')} | {spread(r['httpx'], '.0f')} "
                    f"| {spread_x(ratios(r['httpx+aiohttp'], r['aiohttp']))} |"
                )
    return [*lines, ""]
