"""A real Kubernetes control plane on loopback for the e2e suite: etcd, kube-apiserver and
kube-controller-manager built from Go modules by build.sh, plus the process kubelet.

Why it exists: fleetsync is an operator, and nothing about it is proven until the real API
server validates its objects and the real Job controller turns its Jobs into pods. Our machines
have no cluster and no Docker, so the binaries are built from the pinned k8s.io/kubernetes
release and started here, with generated certificates, RBAC on and the ServiceAccount
admission plugin on.

Everything lives in one temporary directory (certificates, kubeconfigs, logs, pod files; etcd's
data on tmpfs when /dev/shm exists), nothing is written to ~/.kube, every wait is bounded and a
failure to start reports the tail of the failing component's log. ``stop()`` ends every process
group it started and removes the directory (kept when FLEETSYNC_E2E_KEEP=1).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "BINARIES",
    "ControlPlane",
    "ControlPlaneError",
    "KubectlError",
    "find_binaries",
    "pinned_release",
]

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
KUBELET_SCRIPT = HERE / "kubelet.py"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
NODE_NAME = "process-node"
# Every controller that is on by default (E2E.md: the chart's Deployment, ttl-after-finished,
# podgc, root-ca-cert-publisher ... are needed too); the cloud ones find no cloud and idle.
CONTROLLERS = "*"
BUILD_TIMEOUT = 45 * 60


class ControlPlaneError(RuntimeError):
    """The control plane cannot be built or started; the message says why."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call that exited non-zero, with its stderr in the message."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.stdout}"


def pinned_release() -> str:
    """The k8s.io/kubernetes release pinned in go.mod (e.g. v1.36.3)."""
    for line in (HERE / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "k8s.io/kubernetes" and parts[1].startswith("v"):
            return parts[1]
    raise ControlPlaneError(f"no k8s.io/kubernetes requirement in {HERE / 'go.mod'}")


def find_binaries(timeout: float = BUILD_TIMEOUT) -> Path:
    """The directory holding BINARIES: $FLEETSYNC_CONTROLPLANE_BIN, or build.sh's cache
    (which returns at once when the binaries for this go.mod are already built)."""
    override = os.environ.get("FLEETSYNC_CONTROLPLANE_BIN")
    if override:
        directory = Path(override)
        missing = [b for b in BINARIES if not os.access(directory / b, os.X_OK)]
        if missing:
            raise ControlPlaneError(
                f"FLEETSYNC_CONTROLPLANE_BIN={override} lacks executable {', '.join(missing)}"
            )
        return directory
    try:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ControlPlaneError(f"{BUILD_SCRIPT} did not finish in {timeout:.0f}s") from exc
    except OSError as exc:
        raise ControlPlaneError(f"cannot run {BUILD_SCRIPT}: {exc}") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ControlPlaneError(
            f"{BUILD_SCRIPT} failed (exit {done.returncode}); the build needs Go and the Go "
            f"module proxy. Last lines of its output:\n{_tail_text(done.stderr, 40)}"
        )
    directory = Path(lines[-1])
    missing = [b for b in BINARIES if not os.access(directory / b, os.X_OK)]
    if missing:
        raise ControlPlaneError(f"{BUILD_SCRIPT} reported {directory} but {missing} are missing")
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


@dataclass
class Pki:
    """A throwaway CA and what is signed with it; keys are EC P-256 (fast to generate)."""

    directory: Path
    ca: KeyPair = field(init=False)
    _ca_key: ec.EllipticCurvePrivateKey = field(init=False)
    _ca_cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = _name("fleetsync-e2e-ca")
        self._ca_cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key()),
                critical=False,
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca = self._save("ca", self._ca_cert, self._ca_key)

    def _save(self, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
        pair = KeyPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pair.key, key)
        return pair

    def issue(
        self,
        stem: str,
        common_name: str,
        *,
        organization: str | None = None,
        server: bool = False,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
    ) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organization))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
        )
        if dns or ips:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return self._save(stem, builder.sign(self._ca_key, hashes.SHA256()), key)

    def service_account_keys(self) -> KeyPair:
        """RSA, as most service-account issuers use; `cert` is the public key (PEM)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pair = KeyPair(self.directory / "sa.pub", self.directory / "sa.key")
        _write_key(pair.key, key)
        pair.cert.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return pair


def write_kubeconfig(path: Path, server: str, ca: Path, user: str, client: KeyPair) -> None:
    """A self-contained kubeconfig (certificates embedded), mode 0600."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "e2e", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert),
                    "client-key-data": b64(client.key),
                },
            }
        ],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
        "current-context": "e2e",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


# --- processes --------------------------------------------------------------------------------


@dataclass
class Component:
    """One long-running process in its own process group, its output in a log file."""

    name: str
    args: list[str]
    log: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return _tail_text(text, lines)

    def stop(self, grace: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        # The group may hold children (pods of the kubelet) after the leader exited.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


# --- the control plane ------------------------------------------------------------------------


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager (+ the process kubelet) on loopback.

    ``ControlPlane(root)`` works in ``root`` (a fresh temporary directory when None, removed
    by ``stop()``); the binaries come from ``find_binaries()`` unless ``bin_dir`` is given.
    Use ``start()`` / ``stop()`` or ``with ControlPlane() as cp:``. Attributes useful to tests:
    ``kubeconfig`` (admin, O=system:masters), ``server``, ``pki`` (directory with ca.crt,
    admin.crt, admin.key), ``release``, ``timings`` (seconds per startup phase), ``kubectl``.
    """

    root: Path | None = None
    bin_dir: Path | None = None
    with_kubelet: bool = False
    node_name: str = NODE_NAME
    workdir: Path = field(init=False)
    kubeconfig: Path = field(init=False)
    server: str = field(init=False)
    release: str = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)
    components: list[Component] = field(default_factory=list)
    _etcd_dir: Path | None = None
    _pki: Pki | None = None
    _admin: KeyPair | None = None
    _owns_workdir: bool = field(init=False, default=True)

    @property
    def pki(self) -> Path:
        """The directory of the generated certificates and keys."""
        return self.workdir / "pki"

    def __post_init__(self) -> None:
        if self.bin_dir is None:
            self.bin_dir = find_binaries()  # ControlPlaneError (a RuntimeError) if it cannot
        self._owns_workdir = self.root is None
        if self.root is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="fleetsync-e2e-"))
        else:
            self.workdir = Path(self.root)
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.release = pinned_release()
        self.server = ""

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start ---------------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> None:
        """Start everything; raise ControlPlaneError (with log tails) unless all is ready in
        ``timeout`` seconds. Leaves nothing running when it raises."""
        began = time.monotonic()
        deadline = began + timeout
        try:
            self._start(deadline)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - began

    def _phase(self, name: str, began: float) -> None:
        self.timings[name] = round(time.monotonic() - began, 2)

    def _start(self, deadline: float) -> None:
        t = time.monotonic()
        pki = self._pki = Pki(self.pki)
        service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
        serving = pki.issue(
            "apiserver", "kube-apiserver", server=True,
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"),
            ips=(LOOPBACK, service_ip),
        )  # fmt: skip
        self._admin = pki.issue("admin", "fleetsync-e2e-admin", organization="system:masters")
        kcm_client = pki.issue("kcm", "system:kube-controller-manager")
        sa = pki.service_account_keys()
        self._phase("certificates", t)

        t = time.monotonic()
        etcd = self._start_etcd()
        etcd_url = etcd
        self._phase("etcd", t)

        t = time.monotonic()
        port = free_port()
        self.server = f"https://{LOOPBACK}:{port}"
        apiserver = self._component(
            "kube-apiserver",
            f"--etcd-servers={etcd_url}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'apiserver'}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-account-issuer={ISSUER}",
            f"--api-audiences={ISSUER}",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=ServiceAccount,NodeRestriction",
            "--allow-privileged=true",
            "--profiling=false",
        )
        write_kubeconfig(self.kubeconfig, self.server, pki.ca.cert, "admin", self._admin)
        self._wait(
            "kube-apiserver /readyz",
            lambda: self._api_ok("/readyz"),
            deadline,
            apiserver,
        )
        self._phase("kube-apiserver", t)

        t = time.monotonic()
        kcm_kubeconfig = self.workdir / "kcm.kubeconfig"
        write_kubeconfig(
            kcm_kubeconfig, self.server, pki.ca.cert, "system:kube-controller-manager", kcm_client
        )
        kcm_port = free_port()
        kcm = self._component(
            "kube-controller-manager",
            f"--kubeconfig={kcm_kubeconfig}",
            f"--authentication-kubeconfig={kcm_kubeconfig}",
            f"--authorization-kubeconfig={kcm_kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={kcm_port}",
            f"--cert-dir={self.workdir / 'kcm'}",
            f"--controllers={CONTROLLERS}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={sa.key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
        )
        kubelet = self._start_kubelet() if self.with_kubelet else None
        self._wait(
            "kube-controller-manager /healthz",
            lambda: _get_ok(f"https://{LOOPBACK}:{kcm_port}/healthz", verify=False),
            deadline,
            kcm,
        )
        # Pods are admitted only once their namespace's ServiceAccount exists, and mount
        # kube-root-ca.crt: both prove the controllers run.
        self._wait(
            "the default ServiceAccount and kube-root-ca.crt",
            lambda: (
                self._api_ok("/api/v1/namespaces/default/serviceaccounts/default")
                and self._api_ok("/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
            ),
            deadline,
            kcm,
        )
        self._phase("kube-controller-manager", t)
        if kubelet is not None:
            t = time.monotonic()
            self._wait("the process kubelet's Ready node", self._node_ready, deadline, kubelet)
            self._phase("kubelet", t)

    def _start_etcd(self) -> str:
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else self.workdir
        self._etcd_dir = Path(tempfile.mkdtemp(prefix="fleetsync-e2e-etcd-", dir=base))
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://{LOOPBACK}:{client}", f"http://{LOOPBACK}:{peer}"
        etcd = self._component(
            "etcd",
            "--name=e2e",
            f"--data-dir={self._etcd_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=e2e={peer_url}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",
            "--log-level=warn",
        )
        self._wait(
            "etcd /health",
            lambda: _get_ok(f"{client_url}/health"),
            time.monotonic() + 30,
            etcd,
        )
        return client_url

    def _start_kubelet(self) -> Component:
        assert self._pki is not None and self._admin is not None
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONUNBUFFERED": "1",
            "HOME": os.environ.get("HOME", str(self.workdir)),
        }
        component = Component(
            "kubelet",
            [
                sys.executable,
                str(KUBELET_SCRIPT),
                f"--server={self.server}",
                f"--ca={self._pki.ca.cert}",
                f"--cert={self._admin.cert}",
                f"--key={self._admin.key}",
                f"--node-name={self.node_name}",
                f"--root-dir={self.workdir / 'pods'}",
                f"--kubelet-version={self.release}",
            ],
            self.workdir / "kubelet.log",
            env=env,
        )
        component.start()
        self.components.append(component)
        return component

    def _component(self, name: str, *args: str) -> Component:
        assert self.bin_dir is not None
        component = Component(name, [str(self.bin_dir / name), *args], self.workdir / f"{name}.log")
        component.start()
        self.components.append(component)
        return component

    def _wait(
        self, what: str, ready: Callable[[], bool], deadline: float, component: Component
    ) -> None:
        while time.monotonic() < deadline:
            if not component.running():
                raise ControlPlaneError(
                    f"{component.name} exited while waiting for {what}; "
                    f"last lines of {component.log}:\n{component.tail()}"
                )
            if ready():
                return
            time.sleep(0.25)
        raise ControlPlaneError(
            f"timed out waiting for {what}; last lines of {component.log}:\n{component.tail()}"
        )

    # -- API access ----------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the control plane's CA and presents the admin client certificate."""
        assert self._pki is not None and self._admin is not None
        context = ssl.create_default_context(cafile=str(self._pki.ca.cert))
        context.load_cert_chain(str(self._admin.cert), str(self._admin.key))
        return context

    def _api_ok(self, path: str) -> bool:
        return _get_ok(self.server + path, verify=self.ssl_context())

    def _node_ready(self) -> bool:
        try:
            with httpx.Client(verify=self.ssl_context(), timeout=5) as client:
                response = client.get(f"{self.server}/api/v1/nodes/{self.node_name}")
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        conditions = response.json().get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the release's kubectl with the admin kubeconfig (never ~/.kube)."""
        assert self.bin_dir is not None
        command = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        done = subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )
        if check and done.returncode != 0:
            raise KubectlError(done.returncode, command, done.stdout, done.stderr)
        return done

    def logs(self, lines: int = 40) -> str:
        """The last lines of every component's log, for failure reports."""
        return "\n".join(f"--- {c.name} ({c.log}) ---\n{c.tail(lines)}" for c in self.components)

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the components in reverse order (kubelet first: it kills its pods), then
        remove the temporary directories unless FLEETSYNC_E2E_KEEP=1."""
        for component in reversed(self.components):
            component.stop(grace=15 if component.name == "kubelet" else 10)
        if os.environ.get("FLEETSYNC_E2E_KEEP") == "1":
            print(f"fleetsync e2e: kept {self.workdir} and {self._etcd_dir}", file=sys.stderr)
            return
        shutil.rmtree(self._etcd_dir or self.workdir / "no-etcd-dir", ignore_errors=True)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _get_ok(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        with httpx.Client(verify=verify, timeout=2) as client:
            return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def describe(obj: dict[str, Any]) -> str:
    """``kind/namespace/name`` of an API object, for messages."""
    meta = obj.get("metadata", {})
    return f"{obj.get('kind', '?')}/{meta.get('namespace', '')}/{meta.get('name', '?')}"
