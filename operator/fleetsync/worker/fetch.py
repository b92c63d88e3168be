"""One HTTP client per shard, and the request rules that keep credentials where they belong.

Items are fetched with aiohttp directly: one ``ClientSession`` per shard, its connector
capped at ``max_connections``, no cookie jar, no automatic decompression. The httpx API
over the same session (httpx-aiohttp) remains for the rarer requests (inventory pages,
OAuth2 tokens) and for ``transport="httpx"`` or an injected httpx transport (tests). Per
item, httpx cost ~2/3 of the fetch path's CPU (bench/results.md sections 6-7). httpx is
imported only where one of those needs it: with rich and pygments, which its import pulls
in, ~45 ms of every process's start that a run of plain aiohttp requests never uses.

Every URL is checked against ``allowedHosts`` *before* a request is built, so a template that
expands to another host fails that item and never carries a credential there. Redirects are
not followed for the same reason.

A vendor is untrusted too. Client read timeouts bound each read, not the whole response, so
a vendor trickling one byte every half second holds a request forever; and a 200 KB gzip
body can inflate to gigabytes. So every request here runs under one deadline
(``timeoutSeconds`` for the whole exchange, body included) and its body is read and inflated
in bounded steps (gzip and deflate, decoded here rather than by the client so no single step
can inflate past 64 KiB) until ``maxResponseBytes``: past it the item fails with
:class:`~fleetsync.errors.PayloadError` (permanent), past the deadline with a timeout
:class:`~fleetsync.errors.VendorError` (retryable). Both clients map their errors the same
way, and never quote an exception's text (a header-encoding error quotes the header).

A failure explains itself (issue 13): what an error answer or a transport failure says in
a dead letter is :mod:`fleetsync.worker.failure_text`. OAuth2 tokens:
:mod:`fleetsync.worker.oauth2`.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from fleetsync.api.limits import static_host
from fleetsync.errors import HostNotAllowedError, PayloadError, ThrottledError, VendorError
from fleetsync.worker.failure_text import (
    EXCERPT_BYTES,
    error_excerpt,
    secrets_of,
    timeout_text,
    transport_failure,
)
from fleetsync.worker.retry import parse_retry_after

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AllowedHosts",
    "BodyTooLarge",
    "Deadlines",
    "FetchResult",
    "Fetcher",
    "send_bounded",
]

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_INFLATE_STEP = 64 * 1024
# Only what _Inflater can inflate in bounded steps.
_ACCEPT_ENCODING = {"Accept-Encoding": "gzip, deflate"}
_PLAIN_AUTHORITY = re.compile(r"https?://([A-Za-z0-9.-]+(?::[0-9]{1,5})?)(?=[/?#]|$)")
_VERDICTS_KEPT = 256


class AllowedHosts:
    """Hosts (``name`` or ``name:port``) requests may go to."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self._hosts = {h.lower() for h in hosts}
        self._verdicts: dict[str, str] = {}  # plain authority -> "" (allowed) or the refusal

    def __contains__(self, url: object) -> bool:
        parts = urlsplit(str(url))
        host = (parts.hostname or "").lower()
        with_port = f"{host}:{parts.port}" if parts.port else host
        return host in self._hosts or with_port in self._hosts

    def check(self, url: str) -> None:
        """Raise HostNotAllowedError unless ``url``'s host (or host:port) is allowed.

        This runs for every request. A URL starting ``http(s)://`` with a plain authority
        (letters, digits, dots, dashes, an optional numeric port, then ``/``, ``?``, ``#`` or
        the end) has the same host for urlsplit and for the HTTP client whatever follows
        (urlsplit drops tabs and line breaks, which the authority cannot hold then), so the
        verdict is kept per authority; any other URL is parsed in full every time."""
        plain = _PLAIN_AUTHORITY.match(url)
        if plain is None:
            self._check_parsed(url)
            return
        authority = plain.group(1)
        refusal = self._verdicts.get(authority)
        if refusal is None:
            try:
                self._check_parsed(url)
                refusal = ""
            except HostNotAllowedError as error:
                refusal = str(error)
            if len(self._verdicts) >= _VERDICTS_KEPT:
                self._verdicts.clear()  # hosts drawn from items: keep the memory bounded
            self._verdicts[authority] = refusal
        if refusal:
            raise HostNotAllowedError(refusal)

    def _check_parsed(self, url: str) -> None:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if not host:
            raise HostNotAllowedError(f"URL {url!r} has no host (is the vendor's baseUrl set?)")
        if host in self._hosts:
            return
        port = parts.port
        if port is None or f"{host}:{port}" not in self._hosts:
            raise HostNotAllowedError(
                f"host {parts.netloc or url} is not in allowedHosts; request not sent"
            )

    host_of = staticmethod(static_host)


@dataclass(frozen=True, slots=True)
class FetchResult:
    status: int
    body: bytes
    latency: float


class BodyTooLarge(PayloadError):
    """A response body (after decompression) passed its byte limit; reading stopped there."""


class _Inflater:
    """Content-Encoding decoding in steps of at most ``_INFLATE_STEP`` output bytes."""

    def __init__(self, encoding: str) -> None:
        coding = encoding.strip().lower()
        if coding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise PayloadError(f"response Content-Encoding {coding[:40]!r} is not supported")
        self._raw = coding in ("", "identity")
        self._deflate = coding == "deflate"
        # 47: a gzip or zlib header, detected; deflate falls back to a raw stream below.
        self._zlib = None if self._raw else zlib.decompressobj(47 if not self._deflate else 15)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._zlib is None:
            yield data
            return
        try:
            yield from self._inflate(data)
        except zlib.error:
            raise PayloadError("response body is not valid gzip/deflate") from None

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        assert self._zlib is not None
        while True:
            try:
                out = self._zlib.decompress(data, _INFLATE_STEP)
            except zlib.error:
                if not (self._deflate and not self._started):
                    raise
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, no header
                out = self._zlib.decompress(data, _INFLATE_STEP)
            self._started = True
            data = self._zlib.unconsumed_tail
            if out:
                yield out
            if not data and len(out) < _INFLATE_STEP:
                return


async def read_bounded(response: httpx.Response, limit: int) -> bytes:
    """The decoded body of a streamed ``response``; BodyTooLarge past ``limit`` bytes."""
    _declared_over(response.headers, limit)
    if response.is_stream_consumed:  # built in memory (httpx.MockTransport): already decoded
        if len(response.content) > limit:
            raise BodyTooLarge(f"response body is over the limit of {limit} bytes")
        return response.content
    encoding = response.headers.get("content-encoding", "")
    return await _inflate_bounded(response.aiter_raw(), encoding, limit)


async def _read_aiohttp(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """:func:`read_bounded` for an aiohttp response read raw (``auto_decompress=False``)."""
    _declared_over(response.headers, limit)
    encoding = response.headers.get("content-encoding", "")
    return await _inflate_bounded(response.content.iter_any(), encoding, limit)


def _declared_over(headers: Mapping[str, str], limit: int) -> None:
    """BodyTooLarge now if an unencoded body declares more than ``limit`` bytes."""
    declared = headers.get("content-length", "")
    if not headers.get("content-encoding") and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"response body of {declared} bytes is over the limit of {limit}")


async def _inflate_bounded(chunks: AsyncIterator[bytes], encoding: str, limit: int) -> bytes:
    inflater = _Inflater(encoding)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        for piece in inflater.feed(chunk):
            size += len(piece)
            if size > limit:
                raise BodyTooLarge(
                    f"response body is over the limit of {limit} bytes (after decompression)"
                )
            parts.append(piece)
    return b"".join(parts)


async def _read_excerpt(
    chunks: AsyncIterator[bytes], encoding: str, errors: tuple[type[Exception], ...]
) -> bytes:
    """The first :data:`EXCERPT_BYTES` of an error answer's body; what could be read of it
    (an excerpt is a courtesy: a body that cannot be read or decoded, ``errors`` being the
    client's, gives b"")."""
    parts: list[bytes] = []
    size = 0
    unreadable: tuple[type[Exception], ...] = (PayloadError, *errors)
    try:
        inflater = _Inflater(encoding)
        async for chunk in chunks:
            for piece in inflater.feed(chunk):
                parts.append(piece)
                size += len(piece)
                if size >= EXCERPT_BYTES:
                    return b"".join(parts)[: EXCERPT_BYTES + 1]
    except unreadable:
        pass
    return b"".join(parts)


class Deadlines:
    """One deadline per request in flight (``seconds`` after it starts), kept by one timer.

    ``asyncio.timeout`` per request makes and cancels a timer handle each time: ~4.4 µs with
    uvloop, 3-5 % of a shard's CPU in py-spy (20,000 items on one shard: 2.5 % of the run).
    Every request here has the same timeout, so deadlines come in the order requests start:
    the oldest request in flight has the earliest, and one timer set for it serves them all
    (it fires about once per ``seconds``, then is set for the oldest left). A request past
    its deadline is cancelled as ``asyncio.timeout`` does it: :meth:`expired` tells its
    CancelledError from anyone else's (``Task.uncancel``: a shutdown's cancel is never taken
    for the deadline), and :meth:`leave` ends the deadline however the request ended.

    Protocol: ``task = enter()``; on CancelledError, ``expired(task)`` says whether it was
    the deadline's alone; ``leave(task)`` in ``finally``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        # task -> (deadline, its cancel count at enter), oldest first
        self._running: dict[asyncio.Task[object], tuple[float, int]] = {}
        self._expired: dict[asyncio.Task[object], int] = {}  # cancelled for the deadline
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's

    def enter(self) -> asyncio.Task[object]:
        """Start the current task's deadline (it must not hold one already)."""
        task = asyncio.current_task()
        assert task is not None, "a request runs in a task"
        loop = task.get_loop()
        deadline = loop.time() + self.seconds
        self._running[task] = (deadline, task.cancelling())
        if self._timer is None or loop is not self._loop:  # or a loop before this one ended
            self._schedule(loop, deadline)
        return task

    def expired(self, task: asyncio.Task[object]) -> bool:
        """For a CancelledError in ``task``: True if the deadline passed and nobody else
        cancelled the task meanwhile (then the caller raises its timeout instead)."""
        self._running.pop(task, None)
        cancelling = self._expired.pop(task, None)
        return cancelling is not None and task.uncancel() <= cancelling

    def leave(self, task: asyncio.Task[object]) -> None:
        """End ``task``'s deadline (idempotent)."""
        self._running.pop(task, None)
        if self._expired.pop(task, None) is not None:
            task.uncancel()  # the deadline's cancel, which the request did not see

    def _schedule(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self.close()
        self._timer, self._loop = loop.call_at(deadline, self._fire), loop

    def _fire(self) -> None:
        self._timer = None
        while self._running:
            task, (deadline, cancelling) = next(iter(self._running.items()))
            loop = task.get_loop()
            if deadline > loop.time():
                self._schedule(loop, deadline)
                return
            del self._running[task]
            self._expired[task] = cancelling
            task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def _send_aiohttp(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    limit: int,
    deadlines: Deadlines,
    tls: ssl.SSLContext | bool = True,
) -> tuple[int, str | None, bytes]:
    """:func:`send_bounded` over aiohttp: (status, Retry-After, body read for 2xx only)."""
    task = deadlines.enter()
    try:
        async with session.request(
            method, url, headers=headers, allow_redirects=False, ssl=tls
        ) as response:
            status = response.status
            if 200 <= status < 300:
                body = await _read_aiohttp(response, limit)
            else:
                encoding = response.headers.get("content-encoding", "")
                body = await _read_excerpt(
                    response.content.iter_any(), encoding, (aiohttp.ClientError,)
                )
            return status, response.headers.get("retry-after"), body
    except asyncio.CancelledError:
        if deadlines.expired(task):
            raise VendorError(timeout_text(deadlines.seconds), status=None) from None
        raise
    except TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
        raise VendorError(timeout_text(deadlines.seconds), status=None) from None
    except aiohttp.ClientConnectionError as error:  # before ValueError: a certificate error is both
        raise VendorError(transport_failure(error, url), status=-1) from None
    except (ValueError, aiohttp.NonHttpUrlClientError) as error:  # or a header it cannot send
        raise PayloadError(f"request not sent: {type(error).__name__}") from None
    except aiohttp.ClientError:  # a malformed status line, headers or body
        raise VendorError("malformed response (not valid HTTP)", status=-1) from None
    finally:
        deadlines.leave(task)


async def send_bounded(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    limit: int,
    seconds: float,
    read_body: bool | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[httpx.Response, bytes]:
    """Send ``request`` and read its body, all within ``seconds`` and ``limit`` bytes.

    The body is read only for 2xx answers unless ``read_body`` says otherwise (an error
    answer's first 4 KiB are read when ``read_body`` is None, for its excerpt). Raises
    VendorError (status None) on the deadline, VendorError (status -1) on a transport
    failure, BodyTooLarge / PayloadError on a body too large or undecodable."""
    import httpx  # loaded already: whoever built the request did

    try:
        async with asyncio.timeout(seconds):
            response = await client.send(
                request, stream=True, auth=auth or httpx.USE_CLIENT_DEFAULT
            )
            try:
                wanted = read_body if read_body is not None else response.is_success
                if wanted:
                    body = await read_bounded(response, limit)
                elif read_body is not None:
                    body = b""
                elif response.is_stream_consumed:  # built in memory (httpx.MockTransport)
                    body = response.content[: EXCERPT_BYTES + 1]
                else:
                    encoding = response.headers.get("content-encoding", "")
                    errors = (httpx.HTTPError, aiohttp.ClientError)
                    body = await _read_excerpt(response.aiter_raw(), encoding, errors)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        raise VendorError(timeout_text(seconds), status=None) from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as error:
        # Only the type: header-encoding errors quote the header, which may be a credential.
        raise PayloadError(f"request not sent: {type(error).__name__}") from None
    except httpx.TransportError as error:
        raise VendorError(transport_failure(error, str(request.url)), status=-1) from None
    except aiohttp.ClientConnectionError as error:
        raise VendorError(transport_failure(error, str(request.url)), status=-1) from None
    except aiohttp.ClientError:  # a malformed answer httpx-aiohttp does not map
        raise VendorError("malformed response (not valid HTTP)", status=-1) from None
    return response, body


class Fetcher:
    """Sends one request and classifies the answer into the error tree.

    ``transport="aiohttp"`` (the default): items go through one aiohttp session, created on
    first use inside the running loop; ``self.client`` (httpx) shares its connection pool.
    ``"httpx"`` or an httpx transport: everything goes through ``self.client``."""

    def __init__(
        self,
        *,
        allowed: AllowedHosts,
        timeout_seconds: float,
        max_connections: int,
        transport: str | httpx.AsyncBaseTransport = "aiohttp",
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.allowed = allowed
        self.timeout_seconds = timeout_seconds
        self.max_response_bytes = max_response_bytes
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._direct = transport == "aiohttp"
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._tls: ssl.SSLContext | None = None
        self._deadlines = Deadlines(timeout_seconds)

    def tls_for(self, url: str) -> ssl.SSLContext | bool:
        """The verified TLS context (certifi's roots, as httpx) for an https URL, made on the
        first one: loading the roots costs ~25 ms a run of plain-http vendors never needs.
        Anything else gets aiohttp's default, which TLS never reaches (no redirects)."""
        if url[:6].lower() != "https:":
            return True
        if self._tls is None:
            import httpx

            self._tls = httpx.create_ssl_context(trust_env=False)
        return self._tls

    @property
    def client(self) -> httpx.AsyncClient:
        """The httpx client (OAuth2 tokens, an HTTP inventory; every request if not direct),
        made on first use: its transport builds an SSL context (~30 ms) a run of plain
        aiohttp requests never needs."""
        if self._client is None:
            import httpx
            from httpx_aiohttp import AiohttpTransport

            pool: httpx.AsyncBaseTransport
            if isinstance(self._transport, httpx.AsyncBaseTransport):
                pool = self._transport  # tests: httpx.MockTransport
            elif self._direct:
                pool = AiohttpTransport(client=self._aiohttp_session, trust_env=False)
            else:
                limits = httpx.Limits(
                    max_connections=self._max_connections, max_keepalive_connections=None
                )
                pool = httpx.AsyncHTTPTransport(limits=limits)
            self._client = httpx.AsyncClient(
                transport=pool,
                timeout=httpx.Timeout(self.timeout_seconds),
                follow_redirects=False,
                trust_env=False,
                headers=_ACCEPT_ENCODING,
            )
        return self._client

    def _aiohttp_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # Each request passes its TLS context (tls_for; httpx_aiohttp's transport its
                # own), so the connector's default is never the one that verifies.
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # _Inflater decodes in bounded steps
                headers=_ACCEPT_ENCODING,
                timeout=aiohttp.ClientTimeout(total=None),  # one deadline: asyncio.timeout
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        self._deadlines.close()
        if self._client is not None:
            await self._client.aclose()
        if self._session is not None:
            await self._session.close()

    async def fetch(
        self, method: str, url: str, headers: Mapping[str, str], *, now: float | None = None
    ) -> FetchResult:
        self.allowed.check(url)
        started = time.perf_counter()
        if self._direct:
            status, retry_after, body = await _send_aiohttp(
                self._aiohttp_session(),
                method,
                url,
                headers,
                limit=self.max_response_bytes,
                deadlines=self._deadlines,
                tls=self.tls_for(url),
            )
        else:
            status, retry_after, body = await self._send_httpx(method, url, headers)
        latency = time.perf_counter() - started
        if status == 429:
            when = time.time() if now is None else now
            raise ThrottledError(
                "HTTP 429 Too Many Requests", retry_after=parse_retry_after(retry_after, now=when)
            )
        if status < 400:
            return FetchResult(status=status, body=body, latency=latency)
        excerpt = error_excerpt(body, secrets_of(headers))
        said = f"HTTP {status}" + (" Unauthorized" if status == 401 else "")
        said += f": {excerpt}" if excerpt else ""
        if status >= 500 or status == 401:
            raise VendorError(said, status=status)
        raise PayloadError(said)

    async def _send_httpx(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> tuple[int, str | None, bytes]:
        import httpx

        try:
            request = self.client.build_request(method, url, headers=dict(headers))
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as error:
            raise PayloadError(f"request not sent: {type(error).__name__}") from None
        response, body = await send_bounded(
            self.client, request, limit=self.max_response_bytes, seconds=self.timeout_seconds
        )
        return response.status_code, response.headers.get("retry-after"), body
