"""One auth stack: kopf's watches log in with exactly what the controller's writes use.

kopf's own kubeconfig login reads ``KUBECONFIG`` only, so ``fleetsync controller
--kubeconfig other.yaml`` used to watch one cluster and write to another. The controller now
hands kopf the credentials of the configuration ``connect`` loaded (kubernetes_asyncio's
real loaders on real files here; no cluster is needed to load them).
"""

from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleetsync.controller.kube import connect, credentials


def _pem_pair() -> tuple[bytes, bytes]:
    """A throwaway self-signed certificate and its key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


CERT, KEY = _pem_pair()


def _kubeconfig(path: Path, server: str, user: dict[str, Any]) -> Path:
    ca = base64.b64encode(CERT)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": server, "certificate-authority-data": ca.decode()},
                    }
                ],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


async def test_the_watches_use_the_kubeconfig_given_not_the_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _kubeconfig(tmp_path / "env.yaml", "https://10.0.0.1:6443", {"token": "env-token"})
    monkeypatch.setenv("KUBECONFIG", str(other))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    given = _kubeconfig(tmp_path / "given.yaml", "https://127.0.0.1:6443", {"token": "t-1"})
    api = await connect(str(given))
    try:
        info = kopf.ConnectionInfo(**credentials(api.configuration))
    finally:
        await api.close()
    assert info.server == "https://127.0.0.1:6443"
    assert info.token == "t-1"
    assert info.insecure is False
    assert info.ca_path is not None and Path(info.ca_path).read_bytes() == CERT


async def test_client_certificates_reach_the_watches_too(tmp_path: Path) -> None:
    cert = base64.b64encode(CERT).decode()
    key = base64.b64encode(KEY).decode()
    path = _kubeconfig(
        tmp_path / "c.yaml",
        "https://127.0.0.1:6443",
        {"client-certificate-data": cert, "client-key-data": key},
    )
    api = await connect(str(path))
    try:
        found = credentials(api.configuration)
    finally:
        await api.close()
    assert found["token"] is None
    assert Path(found["certificate_path"]).read_bytes() == CERT
    assert Path(found["private_key_path"]).read_bytes() == KEY


def test_a_rotated_service_account_token_is_read_again_at_each_login() -> None:
    from kubernetes_asyncio import client

    configuration = client.Configuration()
    configuration.host = "https://10.96.0.1:443"
    tokens = iter(["first", "second"])

    def refresh(config: client.Configuration, *_: object) -> None:
        config.api_key["BearerToken"] = next(tokens)

    configuration.refresh_api_key_hook = refresh
    assert credentials(configuration)["token"] == "first"
    assert credentials(configuration)["token"] == "second"  # kopf logs in again after a 401
