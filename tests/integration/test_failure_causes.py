"""Every dead letter carries its real cause, counted exactly by cause (issue 13 item 2).

A loopback server plays four failing vendors and one healthy one; ``fleetsync run`` syncs
fifty plants across them and ``fleetsync dead-letters`` reads what it wrote:

- a 500 whose body echoes the request's credential: the status and a 200-character excerpt
  with the credential redacted;
- a closed port: "connection refused (host:port)", not a client library's class name;
- a vendor slower than ``timeoutSeconds``: "timeout after 1 s";
- a body that is not JSON: the decoder's position;

and the summary, the status fields and ``dead-letters --group`` count them by cause.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

pytestmark = pytest.mark.integration
FLEETSYNC = [sys.executable, "-m", "fleetsync"]
SECRET = "s3cr3t-Token_value.XYZ"
VENDORS = ["echo", "closed", "slow", "badjson", "ok"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def vendor() -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        said = request.headers.get("Authorization", "")
        body = f"no plant {request.match_info['id']};\n you sent Authorization: {said} " + "x" * 500
        return web.Response(status=500, text=body)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({"power": 1})

    async def badjson(request: web.Request) -> web.Response:
        return web.Response(text='{"power": 1,, }', content_type="application/json")

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"power": 1})

    app = web.Application()
    app.router.add_get("/echo/plants/{id}", echo)
    app.router.add_get("/slow/plants/{id}", slow)
    app.router.add_get("/badjson/plants/{id}", badjson)
    app.router.add_get("/ok/plants/{id}", ok)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def manifest(url: str, closed: int, db: Path) -> dict[str, Any]:
    bases = {name: f"{url}/{name}" for name in VENDORS}
    bases["closed"] = f"http://127.0.0.1:{closed}/closed"
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": "causes"},
        "spec": {
            "fleet": {"inventory": {"generate": {
                "count": 50, "idTemplate": "p-{i}",
                "template": {"vendor": "{i%[" + ",".join(VENDORS) + "]}"}}}},
            "source": {
                "http": {"url": "{vendor.baseUrl}/plants/{id}", "timeoutSeconds": 1,
                         "auth": {"secretRef": {"name": "keys", "key": "token"}}},
                "vendors": {"by": "vendor",
                            "items": {n: {"baseUrl": b} for n, b in bases.items()}},
                "retry": {"maxAttempts": 1},
                "circuitBreaker": {"minimumCalls": 1000},
                "mapping": {"power": "$.power"},
            },
            "sink": {"sqlite": {"path": str(db), "table": "plants"}},
        },
    }  # fmt: skip


async def fleetsync(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "FLEETSYNC_SECRET_KEYS_TOKEN": SECRET}
    proc = await asyncio.create_subprocess_exec(
        *FLEETSYNC, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_dead_letters_say_why_and_are_counted_by_cause(vendor: str, tmp_path: Path) -> None:
    closed = closed_port()
    path = tmp_path / "syncjob.yaml"
    path.write_text(yaml.safe_dump(manifest(vendor, closed, tmp_path / "plants.db")))
    state = ["--state-dir", str(tmp_path / "st")]
    code, out, err = await fleetsync("run", str(path), "--output", "json", *state)
    assert "Traceback" not in err and SECRET not in out + err
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 2, (err, result)  # PartiallySucceeded: the "ok" vendor's ten synced
    assert result["items"]["synced"] == 10 and result["items"]["failed"] == 40
    causes = {c["cause"]: c["count"] for c in result["failedItems"]["causes"]}
    assert causes == {
        "echo: HTTP 500": 10,
        "closed: connection refused": 10,
        "slow: timeout after 1 s without a complete response": 10,
        "badjson: invalid JSON": 10,
    }

    code, out, err = await fleetsync("dead-letters", str(path), *state)
    assert code == 0, err
    letters = [json.loads(line) for line in out.splitlines()]
    assert len(letters) == 40 and SECRET not in out
    by_vendor = {letter["cause"].split(":")[0]: letter for letter in letters}
    echo = by_vendor["echo"]["reason"]
    assert echo.startswith("echo: HTTP 500: no plant p-"), echo
    assert "you sent Authorization: ***" in echo  # the credential, redacted
    excerpt = echo.removeprefix("echo: HTTP 500: ")
    assert len(excerpt) <= 200 and "\n" not in excerpt
    assert by_vendor["closed"]["reason"] == f"closed: connection refused (127.0.0.1:{closed})"
    assert by_vendor["slow"]["reason"] == "slow: timeout after 1 s without a complete response"
    assert by_vendor["badjson"]["reason"].startswith("badjson: invalid JSON at byte ")
    assert "at byte 12" in by_vendor["badjson"]["reason"]  # where the body goes wrong
    assert all(letter["attempts"] == 1 for letter in letters)

    code, out, err = await fleetsync("dead-letters", str(path), "--group", *state)
    assert code == 0, err
    print(out)
    lines = out.splitlines()
    assert lines[0] == "40 dead letters, 4 causes"
    counted = [line.strip() for line in lines[1:] if not line.strip().startswith("e.g.")]
    assert sorted(counted) == sorted(f"10 \N{MULTIPLICATION SIGN} {c}" for c in causes)
    assert SECRET not in out

    code, out, err = await fleetsync("run", str(path), "--restart", *state)
    print(out)
    assert code == 2, err
    assert "failed 40, by cause:" in out
    assert "10 \N{MULTIPLICATION SIGN} closed: connection refused" in out
    assert f"e.g. closed: connection refused (127.0.0.1:{closed})" in out


# fleetsync's CLI, run in a fresh interpreter that says at exit which of rich, httpx and
# pygments a run loaded: a piped run needs none of them (~45 ms of its start); and whether
# the cyclic collector ran again after the start, which it froze (fleetsync/collector.py).
LOADED_PROBE = (
    "import atexit, gc, sys\n"
    "heavy = ('rich', 'httpx', 'pygments')\n"
    "atexit.register(lambda: print('loaded:', *[m for m in heavy if m in sys.modules],"
    " file=sys.stderr))\n"
    "atexit.register(lambda: print('collector:', gc.isenabled(), gc.get_freeze_count() > 10000,"
    " file=sys.stderr))\n"
    "from fleetsync.cli import main\n"
    "sys.exit(main())\n"
)


async def test_a_piped_run_prints_plain_aligned_columns_and_loads_no_rich_or_httpx(
    vendor: str, tmp_path: Path
) -> None:
    closed = closed_port()
    path = tmp_path / "syncjob.yaml"
    path.write_text(yaml.safe_dump(manifest(vendor, closed, tmp_path / "plants.db")))
    env = {**os.environ, "FLEETSYNC_SECRET_KEYS_TOKEN": SECRET}
    env.pop("FORCE_COLOR", None)
    env.pop("TTY_COMPATIBLE", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOADED_PROBE, "run", str(path), "--state-dir", str(tmp_path / "st"),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    raw_out, raw_err = await asyncio.wait_for(proc.communicate(), 180)
    out, err = raw_out.decode(), raw_err.decode()
    print(out)
    assert proc.returncode == 2, err
    assert err.splitlines()[-2:] == ["collector: True True", "loaded:"], err
    lines = out.splitlines()
    assert lines[0].startswith("PartiallySucceeded causes: ")
    assert "\x1b" not in out and all(line == line.rstrip() for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("vendor "))
    rows = lines[header + 1 : header + 1 + len(VENDORS)]
    assert sorted(row.split()[0] for row in rows) == sorted(VENDORS)
    for title in ("breaker", "calls", "errors", "429s", "p95 ms"):
        column = lines[header].index(title)
        assert all(row[column - 2 : column] == "  " and row[column] != " " for row in rows)
    assert "10 \N{MULTIPLICATION SIGN} closed: connection refused" in out
