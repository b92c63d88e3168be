"""A real PostgreSQL server for the tests: Debian's binaries (installed by .ci/run), a fresh
data directory (on /dev/shm when present), loopback only, a free port, fsync off.

initdb and postgres refuse to run as root, so as root they run as the ``postgres`` user via
``runuser``. The server is stopped (immediate) and its directory removed afterwards.
:func:`postgres_instance` also lets a test stop and restart the server mid-run.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def _bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries missing: apt-get install postgresql")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One server in its own data directory: :meth:`stop` and :meth:`start` it (same port,
    same data) to show what a client sees across a restart."""

    def __init__(self, host: str = "127.0.0.1", timeout: float = 60) -> None:
        self.host, self.timeout = host, timeout
        self._bin = _bin()
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.root = Path(tempfile.mkdtemp(prefix="fleetsync-pg-", dir=base))
        as_root = os.geteuid() == 0
        self._prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
        self.data, sockets = self.root / "data", self.root / "sockets"
        sockets.mkdir()
        password = secrets.token_urlsafe(16)
        pwfile = self.root / "pw"
        pwfile.write_text(password)
        if as_root:
            shutil.chown(self.root, "postgres")
            shutil.chown(sockets, "postgres")
            shutil.chown(pwfile, "postgres")
        self.port = _free_port()
        subprocess.run(
            [*self._prefix, str(self._bin / "initdb"), "-D", str(self.data), "-U", "fleetsync",
             "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=timeout,
        )  # fmt: skip
        if host != "127.0.0.1":
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
        self._log = self.root / "server.log"
        if as_root:
            self._log.touch()
            shutil.chown(self._log, "postgres")
        self._options = (
            f"-p {self.port} -k {sockets} -c listen_addresses={host} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self.dsn = f"postgresql://fleetsync:{password}@{host}:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run(
            [*self._prefix, str(self._bin / "pg_ctl"), "-D", str(self.data), "-l", str(self._log),
             "-w", "-t", str(int(self.timeout)), "-o", self._options, "start"],
            check=True, capture_output=True, timeout=self.timeout + 10,
        )  # fmt: skip
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    return
            time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` is a restart as clients see it (their sessions are
        terminated); ``immediate`` a crash, which with this server's ``fsync=off,
        synchronous_commit=off`` also loses the last acknowledged commits."""
        subprocess.run(
            [*self._prefix, str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop"],
            check=False, capture_output=True, timeout=60,
        )  # fmt: skip

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_instance(timeout: float = 60, host: str = "127.0.0.1") -> Iterator[PostgresServer]:
    """A started server that a test may stop, start and restart; removed afterwards."""
    server = PostgresServer(host, timeout)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextlib.contextmanager
def postgres_server(timeout: float = 60, host: str = "127.0.0.1") -> Iterator[str]:
    """Yields a DSN (password-authenticated user ``fleetsync``, database ``fleetsync``).

    ``host``: the address to listen on; loopback unless pods elsewhere must reach it (the
    kind e2e path passes the Docker network's gateway), then clients from any address may
    log in with the password."""
    with postgres_instance(timeout, host) as server:
        yield server.dsn
