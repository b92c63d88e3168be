"""A DynamoDB-protocol server for the tests: moto in server mode, in its own process on a
free loopback port, plus a fault-injecting proxy in front of it. moto never answers with
UnprocessedItems or throttling (MEASURED.md), so the proxy hands back part of some
requests as UnprocessedItems/UnprocessedKeys, throttles them, answers 5xx or resets the
connection, to prove the retry paths against a real server."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
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
THROTTLING = "com.amazonaws.dynamodb.v20120810#ThrottlingException"
DATA_PLANE = ("BatchWriteItem", "BatchGetItem", "PutItem", "Scan")
AMZ_JSON = "application/x-amz-json-1.0"


class FaultProxy:
    """Forwards to moto, injecting the faults a real DynamoDB (or the network) produces and
    moto never does. Rates are probabilities per request, drawn from ``seed``:

    - ``unprocessed_rate`` (BatchWriteItem): write half, hand the other half back as
      UnprocessedItems; ``throttle_rate`` (BatchWriteItem): ProvisionedThroughputExceeded.
    - ``unprocessed_keys_rate`` (BatchGetItem): read half, the rest as UnprocessedKeys;
      ``read_throttle_rate`` (BatchGetItem): ProvisionedThroughputExceeded or
      ThrottlingException.
    - ``reset_rate`` (``targets``): close the socket with a TCP reset, half of the time
      before forwarding and half after (the write landed, its answer is lost).
    - ``server_error_rate`` (``targets``): 500 InternalServerError or 503 ServiceUnavailable.

    ``injected`` counts each fault; ``requests`` counts requests by operation."""

    def __init__(self, upstream: str, *, seed: int = 7) -> None:
        self.upstream = upstream
        self.unprocessed_rate = 0.0
        self.throttle_rate = 0.0
        self.unprocessed_keys_rate = 0.0
        self.read_throttle_rate = 0.0
        self.reset_rate = 0.0
        self.server_error_rate = 0.0
        self.targets: tuple[str, ...] = DATA_PLANE
        self.rng = random.Random(seed)
        self.injected = dict.fromkeys(
            ("unprocessed", "throttled", "unprocessed_keys", "read_throttled", "reset",
             "server_error"), 0,
        )  # fmt: skip
        self.requests: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.url = ""

    def calm(self) -> None:
        """Stop injecting faults (to read back what was written)."""
        self.unprocessed_rate = self.throttle_rate = self.unprocessed_keys_rate = 0.0
        self.read_throttle_rate = self.reset_rate = self.server_error_rate = 0.0

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
                headers={"Content-Type": r.headers.get("Content-Type", AMZ_JSON)},
            )

    def _hit(self, rate: float, fault: str) -> bool:
        if rate and self.rng.random() < rate:
            self.injected[fault] += 1
            return True
        return False

    @staticmethod
    def _reset(request: web.Request) -> web.Response:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the client

    @staticmethod
    def _error(kind: str, message: str, status: int = 400) -> web.Response:
        return web.json_response(
            {"__type": kind, "message": message}, status=status, content_type=AMZ_JSON
        )

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        self.requests[operation] = self.requests.get(operation, 0) + 1
        if operation in self.targets:
            if self._hit(self.server_error_rate, "server_error"):
                if self.rng.random() < 0.5:
                    return self._error("InternalServerError", "injected 500", 500)
                return self._error("ServiceUnavailable", "injected 503", 503)
            if self._hit(self.reset_rate, "reset"):
                if self.rng.random() < 0.5:
                    await self._forward(request, body)  # it landed; the answer is lost
                return self._reset(request)
        if operation == "BatchWriteItem":
            return await self._batch_write(request, body)
        if operation == "BatchGetItem":
            return await self._batch_get(request, body)
        return await self._forward(request, body)

    async def _batch_write(self, request: web.Request, body: bytes) -> web.Response:
        if self._hit(self.throttle_rate, "throttled"):
            return self._error(THROTTLE, "injected throttle")
        payload = json.loads(body)
        ((table, requests),) = payload["RequestItems"].items()
        if len(requests) > 1 and self.rng.random() < self.unprocessed_rate:
            half = len(requests) // 2
            payload["RequestItems"][table] = requests[:half]
            response = await self._forward(request, json.dumps(payload).encode())
            data = json.loads(response.body)  # type: ignore[arg-type]
            data["UnprocessedItems"] = {table: requests[half:]}
            self.injected["unprocessed"] += len(requests) - half
            return web.json_response(data, content_type=AMZ_JSON)
        return await self._forward(request, body)

    async def _batch_get(self, request: web.Request, body: bytes) -> web.Response:
        if self._hit(self.read_throttle_rate, "read_throttled"):
            kind = THROTTLE if self.rng.random() < 0.5 else THROTTLING
            return self._error(kind, "injected read throttle")
        payload = json.loads(body)
        ((table, wanted),) = payload["RequestItems"].items()
        keys = wanted["Keys"]
        if len(keys) > 1 and self.rng.random() < self.unprocessed_keys_rate:
            half = len(keys) // 2
            payload["RequestItems"][table] = {**wanted, "Keys": keys[:half]}
            response = await self._forward(request, json.dumps(payload).encode())
            data = json.loads(response.body)  # type: ignore[arg-type]
            data["UnprocessedKeys"] = {table: {**wanted, "Keys": keys[half:]}}
            self.injected["unprocessed_keys"] += len(keys) - half
            return web.json_response(data, content_type=AMZ_JSON)
        return await self._forward(request, body)
