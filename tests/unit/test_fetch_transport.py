"""The item fetch path over aiohttp (the default) keeps every guarantee the httpx path gives.

Both transports run against the same small aiohttp server on loopback and must classify
every answer the same way: 429 with Retry-After, 5xx, 401, 4xx, redirects not followed,
bodies bounded after decompression, unsupported encodings, refused connections, malformed
answers, hosts outside allowedHosts never contacted; and, over aiohttp, no cookies kept and
the connection cap held.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetsync.errors import HostNotAllowedError, PayloadError, VendorError
from fleetsync.worker.fetch import AllowedHosts, Fetcher

TRANSPORTS = ["aiohttp", "httpx"]
DOC = b'{"data": {"power": 12.5}}' * 40


class Server:
    """A loopback aiohttp app; counts requests and the most handled at once."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.runner = web.AppRunner(self.app)
        self.url = ""
        self.seen: list[dict[str, str]] = []
        self.in_flight = 0
        self.peak = 0

    async def start(self) -> None:
        routes = {
            "/ok": lambda r: web.Response(body=DOC),
            "/gzip": lambda r: web.Response(
                body=gzip.compress(DOC), headers={"Content-Encoding": "gzip"}
            ),
            "/deflate": lambda r: web.Response(
                body=zlib.compress(DOC), headers={"Content-Encoding": "deflate"}
            ),
            "/raw-deflate": lambda r: web.Response(
                body=zlib.compress(DOC, wbits=-15), headers={"Content-Encoding": "deflate"}
            ),
            "/br": lambda r: web.Response(body=b"x", headers={"Content-Encoding": "br"}),
            "/bad-gzip": lambda r: web.Response(
                body=b"not gzip at all", headers={"Content-Encoding": "gzip"}
            ),
            "/big": lambda r: web.Response(body=b"x" * 5000),
            "/429": lambda r: web.Response(status=429, headers={"Retry-After": "7"}),
            "/503": lambda r: web.Response(status=503, body=b"down"),
            "/401": lambda r: web.Response(status=401),
            "/404": lambda r: web.Response(status=404),
            "/redirect": lambda r: web.Response(
                status=302, headers={"Location": "http://localhost:1/stolen"}
            ),
            "/cookie": lambda r: web.Response(body=b"{}", headers={"Set-Cookie": "s=1; Path=/"}),
        }

        async def handle(request: web.Request) -> web.StreamResponse:
            self.seen.append(dict(request.headers))
            if request.path == "/slow":
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                await asyncio.sleep(0.05)
                self.in_flight -= 1
                return web.Response(body=b"{}")
            return routes[request.path](request)

        self.app.router.add_get("/{tail:.*}", handle)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    running = Server()
    await running.start()
    yield running
    await running.runner.cleanup()


def fetcher(transport: str, *, limit: int = 4096, connections: int = 8) -> Fetcher:
    return Fetcher(
        allowed=AllowedHosts(["127.0.0.1"]),
        timeout_seconds=5,
        max_connections=connections,
        transport=transport,
        max_response_bytes=limit,
    )


async def outcome(transport: str, url: str, **options: int) -> object:
    """The body fetched, or the error raised (type, status, retry_after, message)."""
    client = fetcher(transport, **options)
    try:
        result = await client.fetch("GET", url, {"X-Key": "k"}, now=0.0)
    except (PayloadError, VendorError, HostNotAllowedError) as error:
        status = getattr(error, "status", None)
        return type(error).__name__, status, getattr(error, "retry_after", None), str(error)
    finally:
        await client.aclose()
    return result.status, result.body


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/ok", (200, DOC)),
        ("/gzip", (200, DOC)),
        ("/deflate", (200, DOC)),
        ("/raw-deflate", (200, DOC)),
        ("/429", ("ThrottledError", 429, 7.0, "HTTP 429 Too Many Requests")),
        ("/503", ("VendorError", 503, None, "HTTP 503: down")),
        ("/401", ("VendorError", 401, None, "HTTP 401 Unauthorized")),
        ("/404", ("PayloadError", None, None, "HTTP 404")),
        ("/redirect", (302, b"")),
        ("/br", ("PayloadError", None, None, "response Content-Encoding 'br' is not supported")),
        ("/bad-gzip", ("PayloadError", None, None, "response body is not valid gzip/deflate")),
        (
            "/big",
            ("BodyTooLarge", None, None, "response body of 5000 bytes is over the limit of 4096"),
        ),
    ],
)
async def test_both_transports_classify_answers_alike(
    server: Server, transport: str, path: str, expected: object
) -> None:
    assert await outcome(transport, server.url + path) == expected
    if path == "/redirect":
        assert len(server.seen) == 1  # the Location was not followed


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_body_past_the_limit_after_decompression_fails(
    server: Server, transport: str
) -> None:
    got = await outcome(transport, server.url + "/gzip", limit=len(DOC) - 1)
    assert isinstance(got, tuple) and got[0] == "BodyTooLarge"
    assert "after decompression" in str(got[3])


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "url", ["http://localhost/x", "http://127.0.0.2/x", "ftp://127.0.0.1/x", "/relative"]
)
async def test_no_request_leaves_for_a_host_outside_allowed_hosts(
    server: Server, transport: str, url: str
) -> None:
    got = await outcome(transport, url)
    assert isinstance(got, tuple) and got[0] in ("HostNotAllowedError", "PayloadError")
    assert server.seen == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refused_connection_is_a_retryable_vendor_error(transport: str) -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    got = await outcome(transport, f"http://127.0.0.1:{port}/x")
    assert isinstance(got, tuple) and got[:2] == ("VendorError", -1)
    assert got[3] == f"connection refused (127.0.0.1:{port})"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_malformed_answer_is_a_retryable_vendor_error(transport: str) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 two hundred OK\r\nX: \x00\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        got = await outcome(transport, f"http://127.0.0.1:{port}/x")
    finally:
        listener.close()
        await listener.wait_closed()
    assert isinstance(got, tuple) and got[:2] == ("VendorError", -1), got


async def test_no_cookie_is_kept_between_requests(server: Server) -> None:
    # aiohttp only: httpx's client keeps a cookie jar (not the item path's default).
    client = fetcher("aiohttp")
    try:
        await client.fetch("GET", server.url + "/cookie", {})
        await client.fetch("GET", server.url + "/ok", {})
    finally:
        await client.aclose()
    assert [h.get("Cookie") for h in server.seen] == [None, None]
    assert server.seen[0]["Accept-Encoding"] == "gzip, deflate"


async def test_the_aiohttp_pool_holds_max_connections(server: Server) -> None:
    client = fetcher("aiohttp", connections=3)
    try:
        await asyncio.gather(*(client.fetch("GET", server.url + "/slow", {}) for _ in range(24)))
        # Inventory pages and tokens (httpx over the same session) share that pool.
        response = await client.client.get(server.url + "/ok")
        assert response.status_code == 200 and response.content == DOC
    finally:
        await client.aclose()
    assert len(server.seen) == 25
    assert server.peak == 3


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    host=st.sampled_from(["a.example", "A.Example", "b.example", "127.0.0.1", "[::1]", ""]),
    port=st.sampled_from([None, 80, 8443]),
    allowed=st.lists(
        st.sampled_from(["a.example", "a.example:8443", "127.0.0.1:80", "::1", "b.example:80"]),
        max_size=3,
    ),
)
def test_check_allows_exactly_the_hosts_it_contains(
    host: str, port: int | None, allowed: list[str]
) -> None:
    url = f"https://{host}{f':{port}' if port else ''}/x"
    hosts = AllowedHosts(allowed)
    if not host:
        with pytest.raises(HostNotAllowedError, match="has no host"):
            hosts.check(url)
    elif url in hosts:
        hosts.check(url)
    else:
        with pytest.raises(HostNotAllowedError, match="not in allowedHosts"):
            hosts.check(url)
