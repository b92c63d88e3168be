"""A real PostgreSQL server for the tests: Debian's binaries (installed by .ci/run), a fresh
data directory (on /dev/shm when present), loopback only, a free port, fsync off.

initdb and postgres refuse to run as root, so as root they run as the ``postgres`` user via
``runuser``. The server is stopped (immediate) and its directory removed afterwards.
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


@contextlib.contextmanager
def postgres_server(timeout: float = 60, host: str = "127.0.0.1") -> Iterator[str]:
    """Yields a DSN (password-authenticated user ``fleetsync``, database ``fleetsync``).

    ``host``: the address to listen on; loopback unless pods elsewhere must reach it (the
    kind e2e path passes the Docker network's gateway), then clients from any address may
    log in with the password."""
    bindir = _bin()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = Path(tempfile.mkdtemp(prefix="fleetsync-pg-", dir=base))
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    password = secrets.token_urlsafe(16)
    pwfile = root / "pw"
    pwfile.write_text(password)
    if as_root:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        shutil.chown(pwfile, "postgres")
    port = _free_port()
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "fleetsync",
         "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True, timeout=timeout,
    )  # fmt: skip
    if host != "127.0.0.1":
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
    log = root / "server.log"
    if as_root:
        log.touch()
        shutil.chown(log, "postgres")
    options = (
        f"-p {port} -k {sockets} -c listen_addresses={host} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off"
    )
    subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
         "-t", str(int(timeout)), "-o", options, "start"],
        check=True, capture_output=True, timeout=timeout + 10,
    )  # fmt: skip
    dsn = f"postgresql://fleetsync:{password}@{host}:{port}/postgres"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((host, port)) == 0:
                    break
            time.sleep(0.1)
        yield dsn
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False, capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
