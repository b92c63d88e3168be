"""OAuth2 client-credentials tokens for vendors that want them (``source.http.auth.oauth2``)."""

from __future__ import annotations

import asyncio
import json
import math
import time

from fleetsync.errors import PayloadError, VendorError
from fleetsync.worker.fetch import Fetcher, send_bounded
from fleetsync.worker.secrets import SecretValue

__all__ = ["OAuth2Tokens"]

_TOKEN_MAX_BYTES = 64 * 1024


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
