"""Vendor calls over https are verified, against the roots httpx trusts (certifi), and a run
of plain-http vendors never pays for loading them.

A loopback https server with a self-signed certificate made here: neither transport may
accept it, and the aiohttp path accepts it only when the context httpx would build trusts
it — so the context that verifies is the one :meth:`Fetcher.tls_for` hands each request,
not aiohttp's default (the system store).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleetsync.errors import VendorError
from fleetsync.worker.fetch import AllowedHosts, Fetcher

BODY = b'{"data": {"power": 1}}'


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1 (PEM certificate, PEM key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetsync test vendor")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    yield cert_path, key_path


@pytest.fixture
async def https_url(certificate: tuple[Path, Path]) -> AsyncIterator[str]:
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(*certificate)

    async def item(request: web.Request) -> web.Response:
        return web.Response(body=BODY)

    app = web.Application()
    app.router.add_get("/item", item)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"https://127.0.0.1:{port}/item"
    await runner.cleanup()


def fetcher(transport: str) -> Fetcher:
    return Fetcher(
        allowed=AllowedHosts(["127.0.0.1"]), timeout_seconds=5, max_connections=4,
        transport=transport,
    )  # fmt: skip


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_self_signed_certificate_is_a_retryable_tls_failure(
    https_url: str, transport: str
) -> None:
    client = fetcher(transport)
    try:
        with pytest.raises(VendorError, match=r"TLS handshake failed \(127\.0\.0\.1:\d+\)"):
            await client.fetch("GET", https_url, {}, now=0.0)
    finally:
        await client.aclose()


async def test_the_context_httpx_builds_is_the_one_that_verifies(
    https_url: str, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trust the test certificate in the context httpx makes: the request now succeeds,
    which it could not if aiohttp's default context (which does not trust it) verified."""
    real = httpx.create_ssl_context

    def trusting(**options: object) -> ssl.SSLContext:
        context = real(**options)  # type: ignore[arg-type]
        context.load_verify_locations(cafile=str(certificate[0]))
        return context

    monkeypatch.setattr(httpx, "create_ssl_context", trusting)
    client = fetcher("aiohttp")
    try:
        first = await client.fetch("GET", https_url, {}, now=0.0)
        upper = await client.fetch("GET", "HTTPS" + https_url[5:], {}, now=0.0)
    finally:
        await client.aclose()
    assert (first.status, first.body) == (upper.status, upper.body) == (200, BODY)


def test_https_gets_certifi_roots_built_once_and_http_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[ssl.SSLContext] = []
    real = httpx.create_ssl_context

    def counted(**options: object) -> ssl.SSLContext:
        built.append(real(**options))  # type: ignore[arg-type]
        return built[-1]

    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    client = fetcher("aiohttp")
    assert client.tls_for("http://127.0.0.1/x") is True
    assert client.tls_for("HTTP://127.0.0.1/x") is True
    assert not built  # plain http never loads the roots
    context = client.tls_for("https://127.0.0.1/x")
    assert client.tls_for("Https://a.example/") is context
    assert len(built) == 1 and context is built[0]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    roots = real(trust_env=False).cert_store_stats()["x509_ca"]
    assert roots > 0 and context.cert_store_stats()["x509_ca"] == roots


def test_aiohttp_is_imported_without_loading_the_ca_bundle_and_fails_closed() -> None:
    """In a fresh interpreter (this one imported aiohttp long ago): the worker's import of
    aiohttp skips the two CA-bundle loads of its module-level contexts (fleetsync passes its
    own context to every https request); the verified one keeps CERT_REQUIRED and hostname
    checks with no roots (nothing verifies against it), and ssl is itself again after."""
    probe = (
        "import ssl, json, fleetsync.worker.fetch, aiohttp.connector as c\n"
        "v = c._SSL_CONTEXT_VERIFIED\n"
        "print(json.dumps([v.cert_store_stats()['x509_ca'], v.verify_mode == ssl.CERT_REQUIRED,"
        " v.check_hostname, 'set_default_verify_paths' in vars(ssl.SSLContext),"
        " ssl.create_default_context().cert_store_stats()['x509_ca']]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    roots, required, hostname, patched, system = json.loads(out.stdout)
    assert (roots, required, hostname, patched) == (0, True, True, False)
    assert system == ssl.create_default_context().cert_store_stats()["x509_ca"]


def test_an_aiohttp_already_imported_is_left_as_it_is() -> None:
    import aiohttp.connector

    from fleetsync.worker._aiohttp import import_aiohttp

    before = aiohttp.connector._SSL_CONTEXT_VERIFIED
    import_aiohttp()
    assert aiohttp.connector._SSL_CONTEXT_VERIFIED is before
    assert "set_default_verify_paths" not in vars(ssl.SSLContext)
