"""One HTTP client per shard, and the request rules that keep credentials where they belong.

Items are fetched with aiohttp directly: one ``ClientSession`` per shard, its connector
capped at ``max_connections``, no cookie jar, no automatic decompression. The httpx API
over the same session (httpx-aiohttp) remains for the rarer requests (inventory pages,
OAuth2 tokens) and for ``transport="httpx"`` or an injected httpx transport (tests). Per
item, httpx cost ~2/3 of the fetch path's CPU (bench/results.md sections 6-7).

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

A failure explains itself (issue 13): an error answer carries its status and the first 200
characters of its body (of at most 4 KiB read), with every header value the request sent
redacted (:func:`~fleetsync.worker.secrets.redact`: a vendor echoing the request back must
not put a credential into a dead letter); a transport failure says what happened in words
(``connection refused (host:port)``, ``timeout after 10 s``), never a client's class name.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from fleetsync.errors import HostNotAllowedError, PayloadError, ThrottledError, VendorError
from fleetsync.worker.retry import parse_retry_after
from fleetsync.worker.secrets import SecretValue, redact

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AllowedHosts",
    "BodyTooLarge",
    "FetchResult",
    "Fetcher",
    "OAuth2Tokens",
    "error_excerpt",
    "send_bounded",
    "transport_failure",
]

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_INFLATE_STEP = 64 * 1024
_TOKEN_MAX_BYTES = 64 * 1024
# Only what _Inflater can inflate in bounded steps.
_ACCEPT_ENCODING = {"Accept-Encoding": "gzip, deflate"}
EXCERPT_CHARS = 200  # of an error answer's body, in its item's dead letter
_EXCERPT_BYTES = 4096  # read of an error answer's body, at most
_SPACE = re.compile(r"\s+")


class AllowedHosts:
    """Hosts (``name`` or ``name:port``) requests may go to."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self._hosts = {h.lower() for h in hosts}

    def __contains__(self, url: object) -> bool:
        parts = urlsplit(str(url))
        host = (parts.hostname or "").lower()
        with_port = f"{host}:{parts.port}" if parts.port else host
        return host in self._hosts or with_port in self._hosts

    def check(self, url: str) -> None:
        parts = urlsplit(url)  # once: this runs for every request
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

    @staticmethod
    def host_of(url: str) -> str | None:
        parts = urlsplit(url)
        if not parts.hostname or "{" in parts.netloc:
            return None
        return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname


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


async def _read_excerpt(chunks: AsyncIterator[bytes], encoding: str) -> bytes:
    """The first :data:`_EXCERPT_BYTES` of an error answer's body; what could be read of it
    (an excerpt is a courtesy: a body that cannot be read or decoded gives b"")."""
    parts: list[bytes] = []
    size = 0
    try:
        inflater = _Inflater(encoding)
        async for chunk in chunks:
            for piece in inflater.feed(chunk):
                parts.append(piece)
                size += len(piece)
                if size >= _EXCERPT_BYTES:
                    return b"".join(parts)[: _EXCERPT_BYTES + 1]
    except (PayloadError, aiohttp.ClientError, httpx.HTTPError):
        pass
    return b"".join(parts)


def error_excerpt(body: bytes, secrets: Iterable[str]) -> str:
    """At most :data:`EXCERPT_CHARS` characters of an error answer's ``body`` for a dead
    letter: one line, with every one of ``secrets`` (what the request sent) redacted."""
    cut = len(body) > _EXCERPT_BYTES
    text = body[:_EXCERPT_BYTES].decode("utf-8", "replace")
    values = list(secrets)
    text = redact(text, values, cut=cut)
    # Again once whitespace is folded: "Bearer   t" must not become a credential.
    text = redact(_SPACE.sub(" ", text).strip(), values)
    if len(text) > EXCERPT_CHARS:
        text = text[: EXCERPT_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return text


def _secrets_of(headers: Mapping[str, str]) -> list[str]:
    """What of a request could be a credential: each header value, and each value's part
    after a scheme (``Bearer <token>``)."""
    found: list[str] = []
    for name, value in headers.items():
        if name.lower() == "accept-encoding":
            continue
        found.append(value)
        credential = value.partition(" ")[2]
        if credential.strip():
            found.append(credential.strip())
    return found


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what caused it (a client wraps the OSError that says what happened)."""
    current: BaseException | None = error
    for _ in range(8):  # a cycle of causes is possible; eight is deeper than any client
        if current is None:
            return
        yield current
        current = current.__cause__ or current.__context__


def transport_failure(error: BaseException, url: str) -> str:
    """A transport failure in words a user acts on, never a client library's class name."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    where = f"{host}:{parts.port}" if parts.port else host
    for cause in _chain(error):
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused ({where})"
        if isinstance(cause, aiohttp.ClientConnectorDNSError | socket.gaierror):
            return f"DNS lookup failed for {host}"
        if isinstance(cause, aiohttp.ClientConnectorCertificateError | ssl.SSLError):
            return f"TLS handshake failed ({where})"
        if isinstance(cause, ConnectionResetError | aiohttp.ServerDisconnectedError):
            return f"connection closed by the vendor before it answered ({where})"
        if isinstance(cause, httpx.ConnectError) and "refused" in str(cause).lower():
            return f"connection refused ({where})"
        if isinstance(cause, httpx.RemoteProtocolError):
            if "disconnected" in str(cause).lower():
                return f"connection closed by the vendor before it answered ({where})"
            return "malformed response (not valid HTTP)"
    return f"connection failed ({where})"


def _timeout(seconds: float) -> str:
    return f"timeout after {seconds:g} s without a complete response"


async def _send_aiohttp(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    limit: int,
    seconds: float,
) -> tuple[int, str | None, bytes]:
    """:func:`send_bounded` over aiohttp: (status, Retry-After, body read for 2xx only)."""
    try:
        async with (
            asyncio.timeout(seconds),
            session.request(method, url, headers=headers, allow_redirects=False) as response,
        ):
            status = response.status
            if 200 <= status < 300:
                body = await _read_aiohttp(response, limit)
            else:
                encoding = response.headers.get("content-encoding", "")
                body = await _read_excerpt(response.content.iter_any(), encoding)
            return status, response.headers.get("retry-after"), body
    except TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
        raise VendorError(_timeout(seconds), status=None) from None
    except (ValueError, aiohttp.NonHttpUrlClientError) as error:  # or a header it cannot send
        raise PayloadError(f"request not sent: {type(error).__name__}") from None
    except aiohttp.ClientConnectionError as error:
        raise VendorError(transport_failure(error, url), status=-1) from None
    except aiohttp.ClientError:  # a malformed status line, headers or body
        raise VendorError("malformed response (not valid HTTP)", status=-1) from None


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
                    body = response.content[: _EXCERPT_BYTES + 1]
                else:
                    encoding = response.headers.get("content-encoding", "")
                    body = await _read_excerpt(response.aiter_raw(), encoding)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        raise VendorError(_timeout(seconds), status=None) from None
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
        pool: httpx.AsyncBaseTransport
        if isinstance(transport, httpx.AsyncBaseTransport):
            pool = transport  # tests: httpx.MockTransport
        elif self._direct:
            pool = AiohttpTransport(client=self._aiohttp_session, trust_env=False)
        else:
            limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=None)
            pool = httpx.AsyncHTTPTransport(limits=limits)
        self.client = httpx.AsyncClient(
            transport=pool,
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,
            trust_env=False,
            headers=_ACCEPT_ENCODING,
        )

    def _aiohttp_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, ssl=httpx.create_ssl_context(trust_env=False)
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # _Inflater decodes in bounded steps
                headers=_ACCEPT_ENCODING,
                timeout=aiohttp.ClientTimeout(total=None),  # one deadline: asyncio.timeout
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        await self.client.aclose()
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
                seconds=self.timeout_seconds,
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
        excerpt = error_excerpt(body, _secrets_of(headers))
        said = f"HTTP {status}" + (" Unauthorized" if status == 401 else "")
        said += f": {excerpt}" if excerpt else ""
        if status >= 500 or status == 401:
            raise VendorError(said, status=status)
        raise PayloadError(said)

    async def _send_httpx(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> tuple[int, str | None, bytes]:
        try:
            request = self.client.build_request(method, url, headers=dict(headers))
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as error:
            raise PayloadError(f"request not sent: {type(error).__name__}") from None
        response, body = await send_bounded(
            self.client, request, limit=self.max_response_bytes, seconds=self.timeout_seconds
        )
        return response.status_code, response.headers.get("retry-after"), body


class OAuth2Tokens:
    """Client-credentials tokens, cached until shortly before they expire, refreshed after a 401.

    One refresh at a time per token URL: a burst of 401s triggers one token request, not one
    per in-flight item. Tokens are never logged or included in errors.
    """

    def __init__(
        self,
        fetcher: Fetcher,
        *,
        token_url: str,
        client_id: SecretValue,
        client_secret: SecretValue,
        scopes: list[str],
    ) -> None:
        self._fetcher = fetcher
        self._url = token_url
        self._id = client_id
        self._secret = client_secret
        self._scopes = scopes
        self._token: SecretValue | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.requests = 0

    async def token(self, *, stale: SecretValue | None = None) -> SecretValue:
        async with self._lock:
            fresh = self._token is not None and time.monotonic() < self._expires
            if fresh and (stale is None or stale is not self._token):
                assert self._token is not None
                return self._token
            self._fetcher.allowed.check(self._url)
            data = {"grant_type": "client_credentials"}
            if self._scopes:
                data["scope"] = " ".join(self._scopes)
            self.requests += 1
            client = self._fetcher.client
            try:
                response, raw = await send_bounded(
                    client,
                    client.build_request("POST", self._url, data=data),
                    limit=_TOKEN_MAX_BYTES,
                    seconds=self._fetcher.timeout_seconds,
                    read_body=True,
                    auth=(self._id.reveal(), self._secret.reveal()),
                )
            except PayloadError as error:
                raise VendorError(f"token request failed: {error}") from None
            except VendorError as error:
                raise VendorError(f"token request failed: {error}", status=error.status) from None
            if response.status_code != 200:
                raise VendorError(f"token request answered HTTP {response.status_code}")
            try:
                body = json.loads(raw)
                token, expires_in = str(body["access_token"]), float(body.get("expires_in", 300))
                if not math.isfinite(expires_in):
                    raise ValueError("expires_in is not finite")
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                raise VendorError("token response is not an OAuth2 token") from None
            self._token = SecretValue(token)
            # Refresh a little early so a request never leaves with a token about to lapse.
            self._expires = time.monotonic() + max(1.0, expires_in * 0.9 - 5)
            return self._token

    def invalidate(self, token: SecretValue) -> None:
        if token is self._token:
            self._expires = 0.0
