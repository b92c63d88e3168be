"""What a failed request says in a dead letter: words a user acts on, never a secret.

An error answer carries its status and the first :data:`EXCERPT_CHARS` characters of its
body (of at most :data:`EXCERPT_BYTES` read), with every header value the request sent
redacted (:func:`~fleetsync.worker.secrets.redact`): a vendor echoing the request back must
not put a credential into a dead letter. A transport failure says what happened
(``connection refused (host:port)``, ``timeout after 10 s``), never a client's class name.
"""

from __future__ import annotations

import re
import socket
import ssl
import sys
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import urlsplit

import aiohttp

from fleetsync.worker.secrets import redact

__all__ = [
    "EXCERPT_BYTES",
    "EXCERPT_CHARS",
    "error_excerpt",
    "secrets_of",
    "timeout_text",
    "transport_failure",
]

EXCERPT_CHARS = 200  # of an error answer's body, in its item's dead letter
EXCERPT_BYTES = 4096  # read of an error answer's body, at most
_SPACE = re.compile(r"\s+")


def error_excerpt(body: bytes, secrets: Iterable[str]) -> str:
    """At most :data:`EXCERPT_CHARS` characters of an error answer's ``body`` for a dead
    letter: one line, with every one of ``secrets`` (what the request sent) redacted."""
    cut = len(body) > EXCERPT_BYTES
    text = body[:EXCERPT_BYTES].decode("utf-8", "replace")
    values = list(secrets)
    text = redact(text, values, cut=cut)
    # Again once whitespace is folded: "Bearer   t" must not become a credential.
    text = redact(_SPACE.sub(" ", text).strip(), values)
    if len(text) > EXCERPT_CHARS:
        text = text[: EXCERPT_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return text


def secrets_of(headers: Mapping[str, str]) -> list[str]:
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
    httpx = sys.modules.get("httpx")  # an httpx error means httpx is loaded; else none is
    for cause in _chain(error):
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused ({where})"
        if isinstance(cause, aiohttp.ClientConnectorDNSError | socket.gaierror):
            return f"DNS lookup failed for {host}"
        if isinstance(cause, aiohttp.ClientConnectorCertificateError | ssl.SSLError):
            return f"TLS handshake failed ({where})"
        if isinstance(cause, ConnectionResetError | aiohttp.ServerDisconnectedError):
            return f"connection closed by the vendor before it answered ({where})"
        if httpx is None:
            continue
        if isinstance(cause, httpx.ConnectError) and "refused" in str(cause).lower():
            return f"connection refused ({where})"
        if isinstance(cause, httpx.RemoteProtocolError):
            if "disconnected" in str(cause).lower():
                return f"connection closed by the vendor before it answered ({where})"
            return "malformed response (not valid HTTP)"
    return f"connection failed ({where})"


def timeout_text(seconds: float) -> str:
    return f"timeout after {seconds:g} s without a complete response"
