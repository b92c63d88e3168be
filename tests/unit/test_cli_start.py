"""Start-up cost (issue 17): the CLI imports lazily; a local run plans one process unless more pay.

Each CLI check runs in a fresh interpreter and reads ``sys.modules`` after the command: what
counts is which modules were imported (``--help`` ≤ 0.25 s is measured in bench/, not here).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetsync.api.limits import rate_bound
from fleetsync.api.v1alpha1 import SyncJobSpec
from fleetsync.local.runner import (
    ITEMS_PER_PROCESS,
    ITEMS_PER_PROCESS_SQLITE,
    idle_cores,
    plan_local_processes,
    plan_local_shards,
)

HEAVY = (
    "aiohttp",
    "httpx",
    "httpx_aiohttp",
    "boto3",
    "botocore",
    "psycopg",
    "kopf",
    "kubernetes_asyncio",
    "pydantic",
    "yaml",
    "rich",
    "asyncio",
    "jsonpath_ng",
    "prometheus_client",
    "fleetsync.simulator",
    "fleetsync.worker",
    "fleetsync.local",
    "fleetsync.controller",
    "fleetsync.sinks",
)

_PROBE = """
import json, sys
from fleetsync.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


_IMPORT_ONLY = "import json, sys, fleetsync.cli; print(json.dumps(sorted(sys.modules)))"


def _run(*args: str) -> tuple[int, str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], done.stdout, set(report["modules"])


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("args", [("--help",), ("-h",), ("--version",)])
def test_help_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    code, _, modules = _run(*args)
    assert code == 0
    assert _heavy(modules) == []


def test_importing_the_cli_imports_nothing_heavy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ONLY],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert _heavy(set(json.loads(done.stdout))) == []


def test_help_lists_every_command_with_the_lazy_simulator() -> None:
    code, out, _ = _run("--help")
    assert code == 0
    for name in ("run", "demo", "worker", "controller", "validate", "crds", "simulate"):
        assert f"\n  {name} " in out, name
    assert "Play several vendors' HTTP APIs on loopback" in out


def test_simulate_is_imported_when_invoked() -> None:
    code, out, modules = _run("simulate", "--help")
    assert code == 0
    assert "--latency-ms" in out
    assert "fleetsync.simulator.cli" in modules


def test_validate_imports_no_client_library() -> None:
    code, _, modules = _run("validate", "/nonexistent/manifest.yaml")
    assert code == 64
    assert not any(m.startswith(("aiohttp", "httpx", "boto3", "kopf")) for m in modules)


def test_unknown_command_is_a_usage_error() -> None:
    code, _, _ = _run("no-such-command")
    assert code == 64


# A local run's plan: a small or mid-sized fleet pays one interpreter start (issue 17).


_DYNAMODB = {"dynamodb": {"table": "plants", "key": {"PK": "PLANT#{id}"}}}


def _spec(count: int, sink: dict[str, object] | None = None, **sharding: object) -> SyncJobSpec:
    return SyncJobSpec.model_validate(
        {
            "fleet": {"inventory": {"generate": {"count": count}}},
            "source": {"http": {"url": "https://api.vendor.example/plants/{id}"}},
            "sink": sink or {"sqlite": {"path": "x.db", "table": "plants"}},
            "sharding": sharding,
        }
    )


@pytest.mark.parametrize(
    ("count", "cores", "shards", "sink"),
    [
        (500, 2, 1, None),
        (ITEMS_PER_PROCESS_SQLITE * 2 - 1, 2, 1, None),
        (7_000, 2, 1, None),  # SQLite: one process is faster up to ~14,000 items
        (14_000, 2, 2, None),
        (14_000, 1, 1, None),  # one idle core: a loaded machine
        (100_000, 2, 2, None),
        (100_000, 64, 14, None),
        (ITEMS_PER_PROCESS * 2 - 1, 2, 1, _DYNAMODB),
        (7_000, 2, 2, _DYNAMODB),  # boto3's CPU per item: two processes win at 7,000
        (7_000, 64, 2, _DYNAMODB),
        (100_000, 64, 32, _DYNAMODB),  # maxParallelism 32 by default
        (1_000_000, 8, 8, None),
    ],
)
def test_auto_plan_uses_one_process_until_the_fleet_pays_for_more(
    count: int, cores: int, shards: int, sink: dict[str, object] | None
) -> None:
    assert plan_local_shards(_spec(count, sink), None, cores=cores) == shards


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    count=st.integers(1, 5_000_000),
    cores=st.integers(1, 256),
    max_parallelism=st.integers(1, 1000),
)
def test_auto_plan_is_bounded_by_cores_parallelism_and_fleet(
    count: int, cores: int, max_parallelism: int
) -> None:
    spec = _spec(count, maxParallelism=max_parallelism)
    planned = plan_local_shards(spec, None, cores=cores)
    assert 1 <= planned <= min(cores, max_parallelism)
    assert planned == 1 or count // planned >= ITEMS_PER_PROCESS_SQLITE


def test_explicit_shards_win_over_the_plan() -> None:
    assert plan_local_shards(_spec(7_000), 3, cores=2) == 3
    assert plan_local_shards(_spec(7_000, shards=4), None, cores=2) == 4
    assert plan_local_shards(_spec(1_000_000, shards=2), 5, cores=64) == 5


def test_shards_share_one_process_per_core() -> None:
    # 8 shards on 2 cores: two interpreter starts, not eight (bench section 3).
    assert plan_local_processes(8, None, None, cores=2) == [(0, 2, 4, 6), (1, 3, 5, 7)]
    assert plan_local_processes(2, None, None, cores=8) == [(0,), (1,)]
    assert plan_local_processes(3, 1, None, cores=8) == [(0, 1, 2)]  # --processes wins
    # --parallelism keeps a process per shard (at most that many at once).
    assert plan_local_processes(4, None, 2, cores=2) == [(0,), (1,), (2,), (3,)]


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    shards=st.integers(1, 256),
    requested=st.none() | st.integers(1, 256),
    parallelism=st.none() | st.integers(1, 64),
    cores=st.integers(1, 64),
)
def test_every_shard_runs_in_exactly_one_process(
    shards: int, requested: int | None, parallelism: int | None, cores: int
) -> None:
    groups = plan_local_processes(shards, requested, parallelism, cores=cores)
    assert sorted(shard for group in groups for shard in group) == list(range(shards))
    assert all(groups) and len(groups) <= shards
    if parallelism is None:
        assert len(groups) == min(shards, requested or cores)


def test_the_default_plan_uses_at_most_the_idle_cores() -> None:
    assert 1 <= idle_cores() <= (os.cpu_count() or 1)
    assert 1 <= plan_local_shards(_spec(10_000_000), None) <= (os.cpu_count() or 1)


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    import click

    from fleetsync.cli import cli

    context = click.Context(cli)
    missing = [
        f"{name} {param.opts[-1]}"
        for name in cli.list_commands(context)
        if (command := cli.get_command(context, name)) is not None
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    assert not missing, missing


def test_a_local_run_without_metrics_never_imports_prometheus_client(tmp_path: Path) -> None:
    # `fleetsync run` serves no /metrics: its shard must not pay for the metrics library's
    # import (~26 ms of every local run's start). One item against a closed loopback port,
    # one attempt: the run ends quickly whatever the answer.
    manifest = tmp_path / "syncjob.yaml"
    manifest.write_text(
        json.dumps({
            "apiVersion": "fleetsync.dev/v1alpha1",
            "kind": "SyncJob",
            "metadata": {"name": "no-metrics"},
            "spec": {
                "fleet": {"inventory": {"generate": {"count": 1, "idTemplate": "p-{i}"}}},
                "source": {
                    "http": {"url": "http://127.0.0.1:9/plants/{id}", "timeoutSeconds": 2},
                    "retry": {"maxAttempts": 1},
                },
                "sink": {"sqlite": {"path": "out.db", "table": "plants"}},
            },
        })
    )  # fmt: skip
    code, _, modules = _run(
        "run", str(manifest), "--output", "json", "--state-dir", str(tmp_path / "state")
    )
    assert "fleetsync.worker.engine" in modules  # the shard ran in this process
    assert not any(m.startswith("prometheus_client") for m in modules), code


def _source(url: str, rate_limit: dict[str, object] | None, vendors: dict[str, object] | None):  # type: ignore[no-untyped-def]
    source: dict[str, object] = {"http": {"url": url}}
    if rate_limit is not None:
        source["rateLimit"] = rate_limit
    if vendors is not None:
        source["vendors"] = {"by": "vendor", "items": vendors}
    return SyncJobSpec.model_validate(
        {"fleet": {"inventory": {"generate": {"count": 1}}}, "source": source,
         "sink": {"sqlite": {"path": "x.db", "table": "plants"}}}
    ).source  # fmt: skip


BASE = "{vendor.baseUrl}/plants/{id}"
TWO = {"a": {"baseUrl": "http://a.test"}, "b": {"baseUrl": "http://b.test"}}


@pytest.mark.parametrize(
    ("url", "rate_limit", "vendors", "bound"),
    [
        # one host, one key; a vendor's base URL is a key of its own (limit_for)
        ("https://api.example/p/{id}", {"requestsPerSecond": 25}, None, 25.0),
        ("https://api.example/p/{id}", {"requestsPerSecond": 25}, TWO, 75.0),
        # a key per named vendor's base URL; unnamed vendors have no host and send nothing
        (BASE, {"requestsPerSecond": 25}, TWO, 50.0),
        (BASE, {"requestsPerSecond": 25, "key": "shared"}, TWO, 25.0),
        (BASE, {"requestsPerSecond": 25}, {**TWO, "c": {"rateLimit": {"requestsPerSecond": 5}}},
         50.0),
        (BASE, {"requestsPerSecond": 25},
         {**TWO, "c": {"baseUrl": "http://c.test", "rateLimit": {"requestsPerSecond": 5}}}, 55.0),
        # unlimited somewhere, or a key per vendor of an inventory not known in advance
        ("https://api.example/p/{id}", None, None, math.inf),
        (BASE, None, {"a": {"baseUrl": "http://a.test", "rateLimit": {"requestsPerSecond": 5}},
                      "b": {"baseUrl": "http://b.test"}}, math.inf),
        ("https://{vendor}.example/p/{id}", {"requestsPerSecond": 25}, TWO, math.inf),
    ],
)  # fmt: skip
def test_the_rate_bound_of_a_run_is_the_sum_of_its_keys_rates(
    url: str, rate_limit: dict[str, object] | None, vendors: dict[str, object] | None, bound: float
) -> None:
    # Below IN_PROCESS_RATE every shard runs in the runner's own process (bench section 3).
    assert rate_bound(_source(url, rate_limit, vendors)) == bound
