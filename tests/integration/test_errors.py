"""Errors, never tracebacks (issue 13 item 4): every failure a user can cause or meet at a
run's start, walked through the real ``fleetsync`` command against real servers.

Each case ends in one line on stderr naming the field and the fix, no "Traceback", exit 64
(configuration) or 75 (infrastructure that may recover), and with ``--output json`` a last
stdout line ``{"phase": "Failed", "error": {field, reason, hint}}``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration
FLEETSYNC = [sys.executable, "-m", "fleetsync"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def syncjob(sink: dict[str, Any], **source: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": "errors"},
        "spec": {
            "fleet": {"inventory": {"generate": {"count": 5, "idTemplate": "p-{i}"}}},
            "source": {
                "http": {"url": f"http://127.0.0.1:{closed_port()}/plants/{{id}}", **source},
                "mapping": {"power": "$.power"},
            },
            "sink": sink,
        },
    }


@dataclass
class Outcome:
    code: int
    stderr: str
    error: dict[str, Any]


def run(tmp: Path, manifest: dict[str, Any], env: dict[str, str], *args: str) -> Outcome:
    path = tmp / "syncjob.yaml"
    path.write_text(yaml.safe_dump(manifest))
    out = subprocess.run(
        [*FLEETSYNC, "run", str(path), "--output", "json", "--state-dir", str(tmp / "st"), *args],
        check=False, capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr
    last = json.loads(lines[-1])
    return Outcome(out.returncode, out.stderr, last.get("error") or {})


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """No credentials from the machine: only what each case gives."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLEETSYNC_"))}
    clean["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    clean["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    clean["AWS_EC2_METADATA_DISABLED"] = "true"
    yield clean


def postgres_sink() -> dict[str, Any]:
    return {"postgres": {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "table": "plants"}}


def one_error_line(stderr: str, field: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {field}: "), stderr
    return lines[0]


def test_postgres_unreachable_is_75_naming_the_sink(tmp_path: Path, env: dict[str, str]) -> None:
    env["FLEETSYNC_SECRET_PG_DSN"] = f"postgresql://u:pw-1234567@127.0.0.1:{closed_port()}/db"
    got = run(tmp_path, syncjob(postgres_sink()), env)
    assert got.code == 75, got
    assert got.error["field"] == "spec.sink.postgres"
    assert "Connection refused" in got.error["reason"] and got.error["hint"]
    line = one_error_line(got.stderr, "spec.sink.postgres")
    assert "pw-1234567" not in got.stderr + json.dumps(got.error)
    assert "(fix: " in line


def test_a_wrong_postgres_password_is_64_naming_the_dsn(
    tmp_path: Path, env: dict[str, str], postgres_dsn: str
) -> None:
    user, _, rest = postgres_dsn.partition("://")[2].partition(":")
    host = rest.partition("@")[2]
    env["FLEETSYNC_SECRET_PG_DSN"] = f"postgresql://{user}:not-the-password@{host}"
    got = run(tmp_path, syncjob(postgres_sink()), env)
    assert got.code == 64, got
    assert got.error["field"] == "spec.sink.postgres.dsnSecretRef"
    assert "password authentication failed" in got.error["reason"]
    assert "not-the-password" not in got.stderr + json.dumps(got.error)
    one_error_line(got.stderr, "spec.sink.postgres.dsnSecretRef")


def dynamodb_sink(endpoint: str) -> dict[str, Any]:
    return {
        "dynamodb": {
            "table": "missing-table",
            "region": "us-east-1",
            "endpointUrl": endpoint,
            "key": {"PK": "PLANT#{id}"},
        }
    }


def test_dynamodb_without_credentials_is_64_naming_them(
    tmp_path: Path, env: dict[str, str], dynamodb_endpoint: str
) -> None:
    got = run(tmp_path, syncjob(dynamodb_sink(dynamodb_endpoint)), env)
    assert got.code == 64, got
    assert got.error["field"] == "spec.sink.dynamodb.credentialsSecretRef"
    assert "Unable to locate credentials" in got.error["reason"]
    assert "AWS_ACCESS_KEY_ID" in got.error["hint"]
    one_error_line(got.stderr, "spec.sink.dynamodb.credentialsSecretRef")


def test_a_missing_dynamodb_table_is_64_naming_create_table(
    tmp_path: Path, env: dict[str, str], dynamodb_endpoint: str
) -> None:
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    got = run(tmp_path, syncjob(dynamodb_sink(dynamodb_endpoint)), env)
    assert got.code == 64, got
    assert got.error["field"] == "spec.sink.dynamodb.table"
    assert "missing-table" in got.error["reason"] and "createTable" in got.error["hint"]
    one_error_line(got.stderr, "spec.sink.dynamodb.table")


def test_a_missing_sink_secret_is_64_naming_it(tmp_path: Path, env: dict[str, str]) -> None:
    got = run(tmp_path, syncjob(postgres_sink()), env)
    assert got.code == 64, got
    assert got.error["field"] == "spec.sink.postgres.dsnSecretRef"
    assert got.error["reason"] == "Secret 'pg' key 'dsn' not found"
    assert "FLEETSYNC_SECRET_PG_DSN" in got.error["hint"]
    one_error_line(got.stderr, "spec.sink.postgres.dsnSecretRef")


def test_a_missing_vendor_secret_key_is_64_naming_it(tmp_path: Path, env: dict[str, str]) -> None:
    sink = {"sqlite": {"path": str(tmp_path / "x.db"), "table": "plants"}}
    auth = {"secretRef": {"name": "vendor-keys", "key": "sungrow"}}
    got = run(tmp_path, syncjob(sink, auth=auth), env)
    assert got.code == 64, got
    assert got.error["field"] == "spec.source.http.auth.secretRef"
    assert got.error["reason"] == "Secret 'vendor-keys' key 'sungrow' not found"
    assert "FLEETSYNC_SECRET_VENDOR_KEYS_SUNGROW" in got.error["hint"]
    one_error_line(got.stderr, "spec.source.http.auth.secretRef")


@pytest.mark.parametrize("shards", ["1", "2"], ids=["in-process", "worker-processes"])
@pytest.mark.parametrize("content", [b'[{"id": "p-1"}, {oops', b"\xff\xfe\x00bad"])
def test_an_unreadable_inventory_file_is_64_naming_it(
    tmp_path: Path, env: dict[str, str], content: bytes, shards: str
) -> None:
    # Found by the shards (a file inventory's size is unknown: a shard per idle core, in this
    # process or in worker processes by the machine's load): said the same way either way.
    (tmp_path / "plants.json").write_bytes(content)
    manifest = syncjob({"sqlite": {"path": str(tmp_path / "x.db"), "table": "plants"}})
    manifest["spec"]["fleet"]["inventory"] = {"file": {"path": "plants.json"}}
    got = run(tmp_path, manifest, env, "--shards", shards)
    assert got.code == 64, got
    assert got.error["field"].endswith("plants.json"), got.error
    assert "JSON" in got.error["reason"] or "UTF-8" in got.error["reason"]
    assert len([x for x in got.stderr.splitlines() if x.startswith("error: ")]) == 1


def test_simulate_on_a_busy_port_is_75_in_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [*FLEETSYNC, "simulate", "--port", str(port)],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 75, out
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: --port: cannot listen on 127.0.0.1:{port}"), line
    assert "(fix: " in line


def test_shards_that_keep_failing_put_their_error_in_the_runs_message(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Two worker processes, each unable to reach the sink: the run's message carries the
    error their reports sent, not "see the logs"."""
    env["FLEETSYNC_SECRET_PG_DSN"] = f"postgresql://u:pw-7654321@127.0.0.1:{closed_port()}/db"
    path = tmp_path / "syncjob.yaml"
    path.write_text(yaml.safe_dump(syncjob(postgres_sink())))
    out = subprocess.run(
        [*FLEETSYNC, "run", str(path), "--output", "json", "--shards", "2",
         "--state-dir", str(tmp_path / "st")],
        check=False, capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert "Traceback" not in out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 1, (out.stderr, result)
    assert result["phase"] == "Failed"
    assert "spec.sink.postgres: postgres: cannot connect" in result["message"], result
    assert "pw-7654321" not in out.stdout + out.stderr
