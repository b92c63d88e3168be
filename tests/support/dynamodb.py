"""A DynamoDB-protocol server for the tests: moto in server mode, in its own process on a
free loopback port, plus a fault-injecting proxy in front of it. moto never answers with
UnprocessedItems or throttling (MEASURED.md), so the proxy hands back part of some
BatchWriteItem requests as UnprocessedItems, or throttles them, to prove the retry paths
against a real server."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from aiohttp import ClientSession, web


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server(timeout: float = 60, host: str = "127.0.0.1") -> Iterator[str]:
    """A DynamoDB-protocol server (moto) on ``host`` (loopback unless pods elsewhere must
    reach it); yields its endpoint URL."""
    port = _free_port()
    server = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(server), "-H", host, "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url + "/moto-api/", timeout=1, trust_env=False)
                break
            if process.poll() is not None:
                raise RuntimeError("moto_server exited")
            time.sleep(0.2)
        else:
            raise RuntimeError("moto_server did not start")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


THROTTLE = "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"


class FaultProxy:
    """Forwards to moto; for ``unprocessed_rate`` of BatchWriteItem calls answers with half
    of the items as UnprocessedItems (after writing the other half), and for
    ``throttle_rate`` of them with ProvisionedThroughputExceededException."""

    def __init__(self, upstream: str, *, seed: int = 7) -> None:
        self.upstream = upstream
        self.unprocessed_rate = 0.0
        self.throttle_rate = 0.0
        self.rng = random.Random(seed)
        self.injected = {"unprocessed": 0, "throttled": 0}
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        self._session = ClientSession()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as r:
            return web.Response(
                body=await r.read(),
                status=r.status,
                headers={
                    "Content-Type": r.headers.get("Content-Type", "application/x-amz-json-1.0")
                },
            )

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        if target.endswith("BatchWriteItem"):
            if self.rng.random() < self.throttle_rate:
                self.injected["throttled"] += 1
                return web.json_response(
                    {"__type": THROTTLE, "message": "injected throttle"},
                    status=400, content_type="application/x-amz-json-1.0",
                )  # fmt: skip
            if self.rng.random() < self.unprocessed_rate:
                payload = json.loads(body)
                ((table, requests),) = payload["RequestItems"].items()
                if len(requests) > 1:
                    half = len(requests) // 2
                    payload["RequestItems"][table] = requests[:half]
                    response = await self._forward(request, json.dumps(payload).encode())
                    data = json.loads(response.body)  # type: ignore[arg-type]
                    data["UnprocessedItems"] = {table: requests[half:]}
                    self.injected["unprocessed"] += len(requests) - half
                    return web.json_response(data, content_type="application/x-amz-json-1.0")
        return await self._forward(request, body)
