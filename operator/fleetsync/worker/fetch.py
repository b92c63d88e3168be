"""One HTTP client per shard, and the request rules that keep credentials where they belong.

The client is httpx's API over aiohttp's connection pool (httpx-aiohttp): at 64+ concurrent
requests httpx's own pool costs grow with the square of concurrency (see bench/results.md),
while the httpx API keeps requests, timeouts and errors uniform across the codebase.

Every URL is checked against ``allowedHosts`` *before* a request is built, so a template that
expands to another host fails that item and never carries a credential there. Redirects are
not followed for the same reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from httpx_aiohttp import AiohttpTransport

from fleetsync.errors import HostNotAllowedError, PayloadError, ThrottledError, VendorError
from fleetsync.worker.retry import parse_retry_after
from fleetsync.worker.secrets import SecretValue

__all__ = ["AllowedHosts", "FetchResult", "Fetcher", "OAuth2Tokens"]


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
        if not urlsplit(url).hostname:
            raise HostNotAllowedError(f"URL {url!r} has no host (is the vendor's baseUrl set?)")
        if url not in self:
            host = urlsplit(url).netloc or url
            raise HostNotAllowedError(f"host {host} is not in allowedHosts; request not sent")

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


class Fetcher:
    """Sends one request and classifies the answer into the error tree."""

    def __init__(
        self,
        *,
        allowed: AllowedHosts,
        timeout_seconds: float,
        max_connections: int,
        transport: str | httpx.AsyncBaseTransport = "aiohttp",
    ) -> None:
        self.allowed = allowed
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=None)
        pool: httpx.AsyncBaseTransport
        if isinstance(transport, httpx.AsyncBaseTransport):
            pool = transport  # tests: httpx.MockTransport
        elif transport == "aiohttp":
            pool = AiohttpTransport(limits=limits, trust_env=False)
        else:
            pool = httpx.AsyncHTTPTransport(limits=limits)
        self.client = httpx.AsyncClient(
            transport=pool,
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def fetch(
        self, method: str, url: str, headers: Mapping[str, str], *, now: float | None = None
    ) -> FetchResult:
        self.allowed.check(url)
        started = time.perf_counter()
        try:
            response = await self.client.request(method, url, headers=dict(headers))
        except httpx.TimeoutException as error:
            raise VendorError(f"timeout: {type(error).__name__}", status=None) from None
        except httpx.TransportError as error:
            raise VendorError(f"connection failed: {type(error).__name__}", status=-1) from None
        latency = time.perf_counter() - started
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(
                response.headers.get("retry-after"), now=time.time() if now is None else now
            )
            raise ThrottledError("HTTP 429 Too Many Requests", retry_after=retry_after)
        if status >= 500:
            raise VendorError(f"HTTP {status}", status=status)
        if status == 401:
            raise VendorError("HTTP 401 Unauthorized", status=401)
        if status >= 400:
            raise PayloadError(f"HTTP {status} from vendor")
        return FetchResult(status=status, body=response.content, latency=latency)


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
            try:
                response = await self._fetcher.client.post(
                    self._url, data=data, auth=(self._id.reveal(), self._secret.reveal())
                )
            except httpx.HTTPError as error:
                raise VendorError(f"token request failed: {type(error).__name__}") from None
            if response.status_code != 200:
                raise VendorError(f"token request answered HTTP {response.status_code}")
            try:
                body = response.json()
                token, expires_in = str(body["access_token"]), float(body.get("expires_in", 300))
            except (ValueError, KeyError, TypeError):
                raise VendorError("token response is not an OAuth2 token") from None
            self._token = SecretValue(token)
            # Refresh a little early so a request never leaves with a token about to lapse.
            self._expires = time.monotonic() + max(1.0, expires_in * 0.9 - 5)
            return self._token

    def invalidate(self, token: SecretValue) -> None:
        if token is self._token:
            self._expires = 0.0
