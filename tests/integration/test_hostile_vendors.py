"""Issue 14 against real HTTP servers on loopback (a small aiohttp app per test): a hostile
vendor cannot exhaust a worker (gzip bomb, huge body, trickled body), an item cannot steer
the request (path, Secret), and an inventory cannot send its headers to another host.

Everything goes through the production client: the Fetcher over aiohttp's pool."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fleetsync.api.v1alpha1 import Inventory, Source
from fleetsync.errors import ManifestError, PayloadError, VendorError
from fleetsync.worker.fetch import AllowedHosts, BodyTooLarge, Fetcher
from fleetsync.worker.inventory import iter_inventory
from fleetsync.worker.requests import RequestBuilder
from fleetsync.worker.secrets import SecretResolver
from fleetsync.worker.vendors import VendorRuntime

pytestmark = pytest.mark.integration

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Vendor:
    """An aiohttp app on 127.0.0.1 that records every request it receives."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.app = web.Application()
        self.runner = web.AppRunner(self.app)
        self.url = ""

    def route(self, path: str, handler: Handler) -> None:
        async def recorded(request: web.Request) -> web.StreamResponse:
            self.seen.append((request.raw_path, dict(request.headers)))
            return await handler(request)

        self.app.router.add_get(path, recorded)

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def vendor() -> AsyncIterator[Vendor]:
    server = Vendor()
    yield server
    await server.stop()


async def fetcher_for(vendor: Vendor, *, timeout: float = 5) -> Fetcher:
    await vendor.start()
    return Fetcher(allowed=AllowedHosts(["127.0.0.1"]), timeout_seconds=timeout, max_connections=8)


def gzip_bomb(inflated: int) -> bytes:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    parts = [squeeze.compress(block) for _ in range(inflated >> 20)]
    return b"".join(parts) + squeeze.flush()


async def test_a_gzip_bomb_fails_the_item_at_the_limit(vendor: Vendor) -> None:
    bomb = gzip_bomb(256 << 20)  # 256 MiB of zeros in ~250 KB

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip"})

    vendor.route("/bomb", handler)
    fetcher = await fetcher_for(vendor)
    try:
        with pytest.raises(BodyTooLarge, match="after decompression"):
            await fetcher.fetch("GET", vendor.url + "/bomb", {})
    finally:
        await fetcher.aclose()
    assert len(bomb) < 300_000


async def test_a_huge_plain_body_fails_the_item_without_being_read_whole(vendor: Vendor) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * (1 << 20)
        for _ in range(200):  # 200 MiB, chunked, no Content-Length
            try:
                await response.write(chunk)
            except (ConnectionResetError, RuntimeError):
                break
        return response

    vendor.route("/big", handler)
    fetcher = await fetcher_for(vendor)
    try:
        with pytest.raises(BodyTooLarge, match="over the limit of 8388608 bytes"):
            await fetcher.fetch("GET", vendor.url + "/big", {})
    finally:
        await fetcher.aclose()


async def test_a_trickled_body_is_cut_at_timeout_seconds(vendor: Vendor) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "60"})
        await response.prepare(request)
        for _ in range(60):  # 30 s in all: each read is quick, the whole is not
            await response.write(b" ")
            await asyncio.sleep(0.5)
        return response

    vendor.route("/slow", handler)
    fetcher = await fetcher_for(vendor, timeout=2)
    try:
        with pytest.raises(VendorError, match="timeout after 2 s without") as caught:
            await fetcher.fetch("GET", vendor.url + "/slow", {})
    finally:
        await fetcher.aclose()
    assert caught.value.status is None  # a timeout: retried per retryOn, then dead-lettered


async def test_stalled_requests_time_out_each_on_its_own_while_answers_flow(
    vendor: Vendor,
) -> None:
    # One timer keeps every request's deadline (fetch.Deadlines): requests that stall are
    # cut at timeoutSeconds after their own start, the ones answered meanwhile, before and
    # after in the same tasks, are not disturbed.
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 30)  # released at the end: a quick teardown
        return web.json_response({})

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    vendor.route("/stall", stall)
    vendor.route("/ok", ok)
    fetcher = await fetcher_for(vendor, timeout=1)
    loop = asyncio.get_running_loop()

    async def item(stalls: bool, delay: float) -> tuple[str, float]:
        await asyncio.sleep(delay)
        assert (await fetcher.fetch("GET", vendor.url + "/ok", {})).status == 200
        started = loop.time()
        try:
            await fetcher.fetch("GET", vendor.url + ("/stall" if stalls else "/ok"), {})
        except VendorError as error:
            return str(error), loop.time() - started
        assert (await fetcher.fetch("GET", vendor.url + "/ok", {})).status == 200
        await asyncio.sleep(1.2)  # past any deadline this task held: nothing cancels it
        return "answered", loop.time() - started

    try:
        outcomes = await asyncio.gather(*(item(i % 2 == 0, i * 0.05) for i in range(12)))
    finally:
        release.set()
        await fetcher.aclose()
    for i, (said, seconds) in enumerate(outcomes):
        if i % 2 == 0:
            assert said.startswith("timeout after 1 s"), said
            assert seconds >= 1.0
        else:
            assert said == "answered"


async def test_item_values_cannot_leave_their_segment_or_choose_the_secret(
    vendor: Vendor, tmp_path: Path
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    vendor.route("/{tail:.*}", ok)
    fetcher = await fetcher_for(vendor)
    (tmp_path / "vendor-keys").mkdir()
    (tmp_path / "vendor-keys" / "acme").write_text("vendor-token")
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "dsn").write_text("postgresql://app:hunter2@db/prod")
    source = Source.model_validate(
        {
            "http": {
                "url": vendor.url + "/plants/{id}/realtime",
                "auth": {"secretRef": {"name": "vendor-keys", "key": "{account}"}},
            }
        }
    )
    requests = RequestBuilder(source, secrets=SecretResolver(str(tmp_path)), fetcher=fetcher)
    runtime = VendorRuntime("default", source, limiter=None)
    items: list[dict[str, Any]] = [
        {"id": "../../admin/users?all=1#", "account": "acme"},
        {"id": "p-1", "account": "../pg/dsn"},
        {"id": "p-2", "account": str(tmp_path / "pg" / "dsn")},
    ]
    outcomes = []
    try:
        for item in items:
            try:
                request = await requests.build(runtime, item)
                await fetcher.fetch(request.method, request.url, request.headers)
                outcomes.append("sent")
            except PayloadError:
                outcomes.append("refused")
    finally:
        await fetcher.aclose()
    assert outcomes == ["sent", "refused", "refused"]
    [(raw_path, _)] = vendor.seen
    # One segment between /plants/ and /realtime; no query, no fragment. (The client may
    # write `%3D` as `=`, equivalent inside a segment; `/`, `?` and `#` stay encoded.)
    assert raw_path.startswith("/plants/..%2F..%2Fadmin%2Fusers%3Fall")
    assert raw_path.endswith("1%23/realtime") and raw_path.count("/") == 3
    assert "?" not in raw_path and "#" not in raw_path
    assert all("hunter2" not in str(headers) for _, headers in vendor.seen)


async def test_an_inventory_next_link_to_another_host_gets_no_request(vendor: Vendor) -> None:
    other = Vendor()

    async def first(request: web.Request) -> web.Response:
        return web.json_response({"items": [{"id": "a"}], "next": other.url + "/p2"})

    async def second(request: web.Request) -> web.Response:
        return web.json_response({"items": [{"id": "stolen"}], "next": None})

    vendor.route("/p1", first)
    other.route("/p2", second)
    await other.start()
    other.url = other.url.replace("127.0.0.1", "localhost")  # same machine, another host
    fetcher = await fetcher_for(vendor)
    inventory = Inventory.model_validate(
        {"http": {"url": vendor.url + "/p1", "headers": {"Authorization": "Bearer inv-token"}}}
    )
    items: list[dict[str, Any]] = []
    try:
        with pytest.raises(ManifestError) as caught:
            async for item in iter_inventory(
                inventory, key="id", base_dir=Path("."), http_client=fetcher.client
            ):
                items.append(item)
    finally:
        await fetcher.aclose()
        await other.stop()
    assert caught.value.problems[0][0] == "spec.fleet.inventory.http.allowedHosts"
    assert items == [{"id": "a"}]
    assert other.seen == []
    assert vendor.seen[0][1]["Authorization"] == "Bearer inv-token"


async def test_an_oversized_inventory_page_fails_the_run(vendor: Vendor) -> None:
    async def page(request: web.Request) -> web.Response:
        body = b'{"items": [{"id": "' + b"x" * 5000 + b'"}]}'
        return web.Response(body=zlib.compress(body), headers={"Content-Encoding": "deflate"})

    vendor.route("/p1", page)
    fetcher = await fetcher_for(vendor)
    inventory = Inventory.model_validate(
        {"http": {"url": vendor.url + "/p1", "maxPageBytes": 4096}}
    )
    try:
        with pytest.raises(ManifestError) as caught:
            async for _ in iter_inventory(
                inventory, key="id", base_dir=Path("."), http_client=fetcher.client
            ):
                pass
    finally:
        await fetcher.aclose()
    assert caught.value.problems[0][0] == "spec.fleet.inventory.http.maxPageBytes"


CANARIES = ["pa%ss", "p@ss:w/rd", "tok\x01en", "tök€n", "tok\r\nX-Injected: 1", "a b\tc"]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_no_credential_reaches_an_error_or_a_log_line(
    vendor: Vendor, tmp_path: Path, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    vendor.route("/{tail:.*}", ok)
    await vendor.start()
    fetcher = Fetcher(
        allowed=AllowedHosts(["127.0.0.1"]),
        timeout_seconds=5,
        max_connections=4,
        transport=transport,
    )
    (tmp_path / "keys").mkdir()
    messages: list[str] = []
    try:
        for number, canary in enumerate(CANARIES):
            (tmp_path / "keys" / f"k{number}").write_text(f"SECRET-{canary}-SECRET")
            source = Source.model_validate(
                {
                    "http": {
                        "url": vendor.url + "/p/{id}",
                        "auth": {"secretRef": {"name": "keys", "key": f"k{number}"}},
                    }
                }
            )
            requests = RequestBuilder(
                source, secrets=SecretResolver(str(tmp_path)), fetcher=fetcher
            )
            try:
                request = await requests.build(
                    VendorRuntime("v", source, limiter=None), {"id": "1"}
                )
                await fetcher.fetch(request.method, request.url, request.headers)
            except (PayloadError, VendorError) as error:
                messages.append(str(error))
    finally:
        await fetcher.aclose()
    text = "\n".join(messages + [r.getMessage() for r in caplog.records])
    assert "SECRET" not in text
    sent = [h.get("Authorization", "") for _, h in vendor.seen]
    assert all("\r" not in h and "\n" not in h for h in sent)
