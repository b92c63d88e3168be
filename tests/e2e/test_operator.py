"""The operator on the real control plane: kube-apiserver + etcd + the Job controller, the
process kubelet running worker pods as local processes, the vendor simulator, SQLite sinks —
or whatever target.py selects (a kind cluster, the chart's controller pod, PostgreSQL).

The controller runs as its own ServiceAccount with the chart's RBAC. Each test applies
SyncJobs with kubectl, as a user would, and checks what a user sees: status, conditions,
`kubectl get`, `kubectl wait`, and the rows in the sink.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleetsync_operator import HelmOperator, Operator, get_json, running_operator, wait_for
from stores import PostgresStore, SqliteStore, Store
from target import TARGET

from fleetsync.simulator import SimulatorConfig, SimulatorProcess, VendorConfig

pytestmark = pytest.mark.e2e

NS = "energy"
DOOMED = "energy-doomed"  # a watched namespace the last test deletes
VENDORS = ("sungrow", "huawei", "solaredge")


@pytest.fixture(scope="module")
def operator(
    cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator | HelmOperator]:
    with running_operator(cluster, tmp_path_factory.mktemp("operator"), (NS, DOOMED)) as op:
        yield op
        print(op.log_tail(200))


@pytest.fixture(scope="module")
def postgres_secret(operator: Any, postgres_dsn: str | None) -> str | None:
    """The Secret holding the DSN of the suite's PostgreSQL, when the target's sink is it."""
    if postgres_dsn is None:
        return None
    operator.cluster.kubectl(
        "create", "secret", "generic", "e2e-postgres", "-n", NS,
        f"--from-literal=dsn={postgres_dsn}",
    )  # fmt: skip
    return "e2e-postgres"


_tables = itertools.count()


@pytest.fixture
def store(
    tmp_path: Path, postgres_dsn: str | None, postgres_secret: str | None
) -> Callable[[str], Store]:
    """store("k"): where a test's SyncJob writes (a fresh SQLite file or PostgreSQL table)."""

    def make(name: str) -> Store:
        if postgres_dsn is None or postgres_secret is None:
            return SqliteStore(tmp_path / f"{name}.db")
        table = f"plants_{next(_tables)}_{name.replace('-', '_')}"
        return PostgresStore(postgres_dsn, table, postgres_secret)

    return make


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorProcess]:
    config = SimulatorConfig(
        vendors={
            **{name: VendorConfig(latency={"p50Ms": 5, "p99Ms": 20}) for name in VENDORS},
            "limited": VendorConfig(
                latency={"p50Ms": 5, "p99Ms": 20}, rateLimit={"requestsPerSecond": 25}
            ),
            "slow": VendorConfig(latency={"p50Ms": 40, "p99Ms": 80}),
            "flaky": VendorConfig(latency={"p50Ms": 40, "p99Ms": 80}),
            "allbad": VendorConfig(latency={"p50Ms": 1, "p99Ms": 5}, malformedRate=1.0),
            "shared20": VendorConfig(
                latency={"p50Ms": 5, "p99Ms": 20}, rateLimit={"requestsPerSecond": 20}
            ),
        }
    )
    config.host = TARGET.host  # where worker pods reach this machine
    config.allow_non_loopback = not ipaddress.ip_address(TARGET.host).is_loopback
    with SimulatorProcess(config) as sim:
        yield sim


def syncjob(
    name: str,
    simulator: SimulatorProcess,
    store: Store,
    *,
    count: int = 2000,
    vendors: tuple[str, ...] = VENDORS,
    shards: int = 4,
    parallelism: int = 4,
    extra_spec: dict[str, Any] | None = None,
    rate_limit: float | None = None,
) -> dict[str, Any]:
    source: dict[str, Any] = {
        "http": {"url": "{vendor.baseUrl}/plants/{id}/realtime"},
        "vendors": {
            "by": "vendor",
            "items": {
                str(i): {"baseUrl": f"{simulator.url}/vendors/{v}"} for i, v in enumerate(vendors)
            },
        },
        "retry": {"maxAttempts": 2, "backoff": {"baseSeconds": 0.05, "maxSeconds": 0.2}},
        "circuitBreaker": {"minimumCalls": 10, "windowSeconds": 10, "openSeconds": 60},
        "mapping": {"power": "$.data.power", "updated_at": "$.data.updated_at"},
    }
    if rate_limit is not None:
        source["rateLimit"] = {"requestsPerSecond": rate_limit}
    spec: dict[str, Any] = {
        "fleet": {
            "kind": "plant",
            "key": "id",
            "inventory": {
                "generate": {
                    "count": count,
                    "idTemplate": f"{name}-{{i}}",
                    "template": {"vendor": "{i%" + str(len(vendors)) + "}"},
                }
            },
        },
        "source": source,
        "sink": store.sink(),
        "sharding": {"shards": shards, "parallelism": parallelism},
    }
    spec.update(extra_spec or {})
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def apply_job(operator: Operator, manifest: dict[str, Any]) -> None:
    operator.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))


def status(operator: Operator, name: str) -> dict[str, Any]:
    return get_json(operator.cluster, "syncjob", name, "-n", NS).get("status") or {}


def wait_phase(
    operator: Operator, name: str, phases: set[str], timeout: float = 180
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        s = status(operator, name)
        return s if s.get("phase") in phases else None

    try:
        result: dict[str, Any] = wait_for(
            done, timeout=timeout, interval=1, what=f"{name} in {phases}"
        )
    except AssertionError:
        print(operator.log_tail(120))
        raise
    return result


def conditions(s: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in s.get("conditions", [])}


# --- tests --------------------------------------------------------------------------------


def test_a_syncjob_syncs_every_item_and_shows_fresh_progress(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    db = store("plants")
    apply_job(operator, syncjob("plants-a", simulator, db, extra_spec={}))
    # Sample progress while running: the status may trail the sink by at most 5 s.
    samples: list[tuple[float, int, int]] = []  # (time, rows in sink, done in status)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        s = status(operator, "plants-a")
        done = int((s.get("progress") or "0/0").split("/")[0])
        samples.append((time.monotonic(), db.rows(), done))
        if s.get("phase") in ("Succeeded", "PartiallySucceeded", "Failed"):
            break
        if s.get("phase") in ("Pending", "Running"):
            c = conditions(s)
            assert (c["Reconciling"], c["Ready"], c["Stalled"], c["Complete"]) == (
                "True", "False", "False", "False",
            ), s["conditions"]  # fmt: skip
        time.sleep(0.5)
    for t, _, done in samples:
        earlier = [r for (t0, r, _) in samples if t0 <= t - 5]
        if earlier:
            assert done >= max(earlier), f"status more than 5 s stale at {t}: {samples}"
    out = operator.cluster.kubectl(
        "wait", "--for=condition=Complete", "syncjob/plants-a", "-n", NS, "--timeout=120s"
    )
    assert "condition met" in out.stdout
    s = status(operator, "plants-a")
    assert s["phase"] == "Succeeded", s
    # A shard replaced mid-run finds its predecessor's last writes unchanged: each item is
    # counted once, as synced or unchanged.
    assert s["items"]["total"] == 2000
    assert s["items"]["synced"] + s["items"]["unchanged"] == 2000, s["items"]
    assert s["progress"] == "2000/2000"
    assert conditions(s)["Ready"] == "True" and conditions(s)["Reconciling"] == "False"
    assert all(c["observedGeneration"] == 1 for c in s["conditions"])
    assert s["shards"]["total"] == 4
    assert db.rows() == 2000
    table = operator.cluster.kubectl("get", "sj", "-n", NS, "plants-a").stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "PROGRESS", "FAILED", "DURATION", "AGE"]
    assert "Succeeded" in table and "2000/2000" in table


def test_a_shared_25_rps_limit_holds_over_four_shards(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    simulator_stats_before = simulator.stats()["vendors"]["limited"]["total"]
    manifest = syncjob(
        "limited-a", simulator, store("l"), count=400, vendors=("limited",),
        rate_limit=25,
    )  # fmt: skip
    apply_job(operator, manifest)
    s = wait_phase(operator, "limited-a", {"Succeeded", "PartiallySucceeded", "Failed"}, 120)
    assert s["phase"] == "Succeeded", s
    stats = simulator.stats()["vendors"]["limited"]
    assert stats["total"] - simulator_stats_before >= 400
    assert stats["maxPerSecond"] <= 25, stats
    assert stats["byStatus"].get("429", 0) == 0


def test_the_controller_killed_twice_loses_nothing(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    db = store("k")
    apply_job(operator, syncjob("plants-k", simulator, db, vendors=("slow",), count=2000))
    for fraction in (0.2, 0.5):
        wait_for(lambda f=fraction: db.rows() >= 2000 * f, timeout=120, what=f"{fraction:.0%}")  # type: ignore[misc]
        operator.kill()
        time.sleep(2)
        operator.start()
    s = wait_phase(operator, "plants-k", {"Succeeded", "PartiallySucceeded", "Failed"})
    assert s["phase"] == "Succeeded", s
    assert db.rows() == 2000
    items = s["items"]
    assert items["synced"] + items["unchanged"] + items["fresh"] == 2000
    assert items["remaining"] == 0


def test_a_failing_vendor_opens_its_breaker_fleet_wide_and_others_go_on(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    db = store("b")
    simulator.patch_vendor("flaky", errorRate=0.0)
    manifest = syncjob("plants-b", simulator, db, vendors=("slow", "flaky"), count=4000)
    # An open breaker defers items: they fail only once the outage outlasts maxOutageSeconds.
    manifest["spec"]["source"]["circuitBreaker"] = {
        "minimumCalls": 10, "windowSeconds": 10, "openSeconds": 5, "maxOutageSeconds": 15,
    }  # fmt: skip
    # Up to all 2,000 of the failing vendor's items may fail: the run must still end partial.
    manifest["spec"]["deadLetter"] = {"maxItemFailures": 4000}
    # Few requests in flight per vendor and shard (about 11 s of fetching in all), so the
    # outage, started at the first rows, lands early in the run.
    manifest["spec"]["source"]["concurrency"] = {"mode": "fixed", "initial": 2, "min": 1, "max": 2}
    apply_job(operator, manifest)
    wait_for(lambda: db.rows() >= 1, timeout=120, what="first items")
    simulator.patch_vendor("flaky", errorRate=1.0)
    try:
        seen_open = wait_for(
            lambda: any(
                v["name"] == "1" and v["breaker"] == "Open" and v.get("since")
                for v in status(operator, "plants-b").get("vendors", [])
            ),
            timeout=60,
            what="flaky's breaker Open in status, with since",
        )
        assert seen_open
        s = wait_phase(operator, "plants-b", {"Succeeded", "PartiallySucceeded", "Failed"})
    finally:
        simulator.patch_vendor("flaky", errorRate=0.0)
    assert s["phase"] == "PartiallySucceeded", s
    assert conditions(s)["Complete"] == "True" and conditions(s)["Degraded"] == "True"
    assert s["failedItems"]["count"] > 0
    assert 0 < len(s["failedItems"]["sample"]) <= 20
    for failed_item in s["failedItems"]["sample"]:  # the vendor's answer, never "breaker open"
        assert failed_item["reason"].startswith("1: HTTP 50"), failed_item
    causes = s["failedItems"]["causes"]
    assert sum(c["count"] for c in causes) == s["failedItems"]["count"], causes
    assert all(c["cause"].startswith("1: HTTP 50") for c in causes), causes
    healthy = [k for k in db.synced_keys() if int(k.rsplit("-", 1)[1]) % 2 == 0]
    assert len(healthy) == 2000  # every item of the healthy vendor is in the sink
    out = operator.cluster.kubectl(
        "wait", "--for=condition=Complete", "syncjob/plants-b", "-n", NS, "--timeout=10s"
    )
    assert out.returncode == 0
    # The vendor is healthy again: retry the dead letters as a new SyncJob.
    failed = s["failedItems"]["count"]
    retry = subprocess.run(
        [sys.executable, "-m", "fleetsync", "retry-failed", "plants-b", "-n", NS,
         f"--kubeconfig={operator.cluster.kubeconfig}"],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, **db.cli_env()},
    )  # fmt: skip
    assert retry.returncode == 0, retry.stderr
    assert "syncjob/plants-b-retry-1 created" in retry.stdout
    again = wait_phase(operator, "plants-b-retry-1", {"Succeeded", "PartiallySucceeded", "Failed"})
    assert again["phase"] == "Succeeded", again
    assert again["items"]["total"] == failed and again["items"]["synced"] == failed
    assert db.rows() == 4000


def test_suspend_and_resume_sync_each_item_once(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    db = store("s")
    before = simulator.stats()["vendors"]["slow"]["total"]
    manifest = syncjob("plants-s", simulator, db, vendors=("slow",), count=2000)
    # Few requests in flight, so the run is still going when the suspend lands (about 11 s
    # of fetching in all): the engine is fast enough to finish 2,000 items before otherwise.
    manifest["spec"]["source"]["concurrency"] = {"mode": "fixed", "initial": 2, "min": 1, "max": 2}
    apply_job(operator, manifest)
    wait_for(lambda: db.rows() >= 400, timeout=120, what="some progress")
    operator.cluster.kubectl(
        "patch", "syncjob", "plants-s", "-n", NS, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    s = wait_phase(operator, "plants-s", {"Suspended"}, 60)
    assert conditions(s)["Suspended"] == "True"
    # No shard runs while suspended (a shard that had already finished keeps its pod).
    wait_for(
        lambda: all(
            pod["status"].get("phase") in ("Succeeded", "Failed")
            for pod in get_json(
                operator.cluster, "pods", "-n", NS, "-l", "fleetsync.dev/run=plants-s"
            )["items"]
        ),
        timeout=60,
        what="no shard pod running while suspended",
    )
    kept = db.rows()
    assert 400 <= kept < 2000
    operator.cluster.kubectl(
        "patch", "syncjob", "plants-s", "-n", NS, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    s = wait_phase(operator, "plants-s", {"Succeeded", "PartiallySucceeded", "Failed"})
    assert s["phase"] == "Succeeded", s
    assert db.rows() == 2000
    fetched = simulator.stats()["vendors"]["slow"]["total"] - before
    # Resumed from checkpoints: each of the 4 shards fetches again at most one sink batch
    # (500 items) of what it had in flight or finished since its last report.
    assert fetched <= 2000 + 4 * 500, fetched


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no inventory", {"fleet": {"inventory": {}}}, "inventory"),
    (
        "two inventories",
        {"fleet": {"inventory": {"generate": {"count": 1}, "inline": [{"id": "a"}]}}},
        "inventory",
    ),
    ("zero rate", {"source": {"rateLimit": {"requestsPerSecond": 0}}}, "requestsPerSecond"),
    ("negative deadline", {"deadlineSeconds": -1}, "deadlineSeconds"),
    (
        "bad concurrency",
        {"source": {"concurrency": {"min": 10, "initial": 5, "max": 20}}},
        "concurrency",
    ),
    ("unknown field", {"fleet": {"colour": "red"}}, "colour"),
    (
        "two sinks",
        {
            "sink": {
                "sqlite": {"path": "a"},
                "postgres": {"table": "t", "dsnSecretRef": {"name": "a", "key": "b"}},
            }
        },
        "sink",
    ),
    ("bad method", {"source": {"http": {"method": "FETCH"}}}, "method"),
    ("too many shards", {"sharding": {"shards": 0}}, "shards"),
    ("bad retry", {"source": {"retry": {"maxAttempts": 0}}}, "maxAttempts"),
    ("bad mode", {"source": {"concurrency": {"mode": "turbo"}}}, "mode"),
    (
        "inline over 1000",
        {"fleet": {"inventory": {"inline": [{"id": str(i)} for i in range(1001)]}}},
        "inline",
    ),
]


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and value:
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(("case", "patch", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifests_are_rejected_naming_the_field(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store], case: str,
    patch: dict[str, Any], field: str,
) -> None:  # fmt: skip
    manifest = syncjob("invalid", simulator, store("x"))
    manifest["spec"] = merge(manifest["spec"], patch)
    if case == "no inventory":
        manifest["spec"]["fleet"]["inventory"] = {}
    out = operator.cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(manifest), check=False
    )
    assert out.returncode != 0, f"{case} was accepted"
    assert field in out.stderr, out.stderr


def test_a_pod_that_cannot_start_stalls_the_run_naming_the_secret(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    manifest = syncjob("plants-nosecret", simulator, store("n"), count=10, shards=1, parallelism=1)
    manifest["spec"]["source"]["http"]["auth"] = {
        "secretRef": {"name": "vendor-keys-missing", "key": "token"}
    }
    apply_job(operator, manifest)
    s = wait_phase(operator, "plants-nosecret", {"Failed"}, 90)
    assert conditions(s)["Stalled"] == "True"
    stalled = next(c for c in s["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "PodStartFailed"
    assert "vendor-keys-missing" in stalled["message"]
    operator.cluster.kubectl("delete", "syncjob", "plants-nosecret", "-n", NS, "--wait=false")


def test_a_schedule_runs_inside_its_window_only_and_on_request(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    from datetime import UTC, datetime

    def hhmm(epoch: float) -> str:
        return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M")

    # The schedule is created now (real time); its first tick T1 is the next quarter hour at
    # least a minute away, and its window is T1 ± 30 min, so T1 + 60 min falls outside it.
    # The controller's clock is then moved by the test instead of waiting.
    now = time.time()
    t1 = (int(now + 60) // 900 + 1) * 900
    template = syncjob("x", simulator, store("sched"), count=30, shards=1, parallelism=1)
    schedule = {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncSchedule",
        "metadata": {"name": "plants-every-15", "namespace": NS},
        "spec": {
            "schedule": "*/15 * * * *",
            "timeZone": "UTC",
            "activeWindow": {"start": hhmm(t1 - 1800), "end": hhmm(t1 + 1800)},
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 1,
            "jobTemplate": {"spec": template["spec"]},
        },
    }
    operator.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(schedule))
    try:

        def runs() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = get_json(
                operator.cluster,
                "syncjobs",
                "-n",
                NS,
                "-l",
                "fleetsync.dev/schedule=plants-every-15",
            )["items"]
            return items

        def schedule_status() -> dict[str, Any]:
            body = get_json(operator.cluster, "syncschedule", "plants-every-15", "-n", NS)
            return body.get("status") or {}

        time.sleep(3)
        assert runs() == []  # no tick since creation yet
        operator.set_clock(t1 + 5)
        first = wait_for(runs, timeout=30, what="the first tick's run")
        assert len(first) == 1
        run = first[0]
        stamp = datetime.fromtimestamp(t1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert run["metadata"]["annotations"]["fleetsync.dev/scheduled-time"] == stamp
        wait_phase(operator, run["metadata"]["name"], {"Succeeded"}, 120)
        # T1 + 60 min is outside the window: skipped and counted, not queued, no catch-up.
        operator.set_clock(t1 + 3600 + 5)
        wait_for(
            lambda: schedule_status().get("skippedOutsideWindow") == 1,
            timeout=30,
            what="the skipped tick",
        )
        assert [r["metadata"]["name"] for r in runs()] == [run["metadata"]["name"]]
        assert schedule_status()["lastSuccessfulTime"]
        # run-now starts exactly one run, however often the controller sees the annotation.
        operator.cluster.kubectl(
            "annotate", "syncschedule", "plants-every-15", "-n", NS, "fleetsync.dev/run-now=1"
        )
        wait_for(lambda: len(runs()) >= 2, timeout=30, what="the run-now run")
        time.sleep(4)
        names = [r["metadata"]["name"] for r in runs()]
        now_runs = [n for n in names if "-now-" in n]
        assert len(now_runs) == 1, names
        wait_phase(operator, now_runs[0], {"Succeeded"}, 120)
        # History limit 1: the older successful run is pruned.
        wait_for(
            lambda: [r["metadata"]["name"] for r in runs()] == now_runs,
            timeout=30,
            what="history pruned",
        )
    finally:
        operator.cluster.kubectl(
            "delete", "syncschedule", "plants-every-15", "-n", NS, "--wait=false"
        )
        operator.set_clock(None)


def test_every_example_and_the_chart_pass_server_side_validation(operator: Any) -> None:
    root = Path(__file__).resolve().parents[2]
    for ns in ("energy", "iot", "health", "fleetsync-simulator"):
        operator.cluster.kubectl("create", "namespace", ns, check=False)
    for example in sorted((root / "examples").glob("*/*.yaml")):
        out = operator.cluster.kubectl("apply", "--dry-run=server", "-f", str(example), check=False)
        assert out.returncode == 0, f"{example}: {out.stderr}"
    from fleetsync_operator import render_chart

    # A release of its own: the suite's controller may be a helm release with other values.
    operator.cluster.kubectl("create", "namespace", "fleetsync-dryrun", check=False)
    docs = render_chart(
        "--set", "metrics.serviceMonitor.enabled=false", "--set", "watchNamespaces={energy}",
        release="dryrun", namespace="fleetsync-dryrun",
    )  # fmt: skip
    out = operator.cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs), check=False
    )
    assert out.returncode == 0, out.stderr


def test_a_worker_with_an_invalid_config_fails_the_run_at_once(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    # Valid for the API server, refused by the worker: the Secret exists but lacks the key.
    operator.cluster.kubectl(
        "create", "secret", "generic", "keys-without-token", "-n", NS, "--from-literal=other=x"
    )
    manifest = syncjob("plants-badcfg", simulator, store("c"), count=10, shards=2)
    manifest["spec"]["source"]["http"]["auth"] = {
        "secretRef": {"name": "keys-without-token", "key": "token"}
    }
    apply_job(operator, manifest)
    s = wait_phase(operator, "plants-badcfg", {"Failed", "Succeeded"}, 90)
    assert s["phase"] == "Failed"
    failed = next(c for c in s["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec" and failed["status"] == "True"
    # The worker's own account, from its report: the Secret and key, and how to fix it.
    assert "Secret 'keys-without-token' key 'token' not found" in failed["message"], failed
    assert conditions(s)["Stalled"] == "True" and conditions(s)["Ready"] == "False"
    job = get_json(operator.cluster, "job", "plants-badcfg", "-n", NS)["status"]
    assert job.get("failed", 0) <= 2  # exit 64: FailJob, no retries


def test_a_pod_may_report_only_for_its_own_run(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    import httpx

    manifest = syncjob("plants-tok", simulator, store("t"), vendors=("slow",))
    # Paced (2,000 items at 40 req/s), so its shard pods are running for a while however
    # fast the engine gets.
    manifest["spec"]["source"]["rateLimit"] = {"requestsPerSecond": 40}
    apply_job(operator, manifest)

    def running_pod() -> str | None:
        for pod in get_json(
            operator.cluster, "pods", "-n", NS, "-l", "fleetsync.dev/run=plants-tok"
        )["items"]:
            if pod["status"].get("phase") == "Running":
                return str(pod["metadata"]["name"])
        return None

    pod = wait_for(running_pod, timeout=60, what="a running shard pod")
    token = operator.cluster.kubectl(
        "create", "token", "fleetsync-worker", "-n", NS, "--audience=fleetsync.dev",
        "--bound-object-kind=Pod", f"--bound-object-name={pod}",
    ).stdout.strip()  # fmt: skip
    report = {
        "run": "plants-other", "shard": 0, "pod": pod, "state": "running", "shardTotal": None,
        "seen": 0, "checkpoint": None, "vendors": [], "failedSample": [], "wants": {},
        "cost": {"vendorCalls": 0, "sinkCalls": 0, "writeUnits": 0, "readUnits": 0,
                 "unprocessedItems": 0, "throttles": 0},
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    other = httpx.post(f"{operator.url}/v1/report", json=report, headers=headers, trust_env=False)
    assert other.status_code == 403
    wrong_audience = operator.cluster.kubectl(
        "create", "token", "fleetsync-worker", "-n", NS, "--bound-object-kind=Pod",
        f"--bound-object-name={pod}",
    ).stdout.strip()  # fmt: skip
    refused = httpx.post(
        f"{operator.url}/v1/report", json={**report, "run": "plants-tok"},
        headers={"Authorization": f"Bearer {wrong_audience}"}, trust_env=False,
    )  # fmt: skip
    assert refused.status_code == 401
    wait_phase(operator, "plants-tok", {"Succeeded"}, 180)


def test_metrics_carry_no_run_pod_or_item_names(operator: Any) -> None:
    """After the schedule's runs (test above): series name the schedule, never its runs."""
    import re

    import httpx

    text = httpx.get(f"{operator.url}/metrics", trust_env=False).text
    series = [line for line in text.splitlines() if line.startswith("fleetsync_")]
    assert any('owner="plants-every-15"' in line for line in series)
    assert not any(re.search(r"plants-every-15-(\d+|now-)", line) for line in series)
    assert not any(re.search(r'\b(pod|item|run|key)="', line) for line in series)
    assert not any(re.search(r"-\d-[a-z0-9]{5}\b", line) for line in series)  # pod names


_shared_rounds = itertools.count()


def test_two_runs_sharing_a_key_hold_20_rps_even_with_the_controller_killed(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    # Names of their own each time, so the test can be repeated in one session
    # (`pytest --count 10` with pytest-repeat): issue 12 asks for ten passes in a row.
    names = [f"shared-a-{next(_shared_rounds)}", f"shared-b-{next(_shared_rounds)}"]
    stores = {name: store(name) for name in names}
    before = simulator.stats()["vendors"].get("shared20", {}).get("total", 0)
    for name in names:
        manifest = syncjob(name, simulator, stores[name], count=300,
                           vendors=("shared20",))  # fmt: skip
        manifest["spec"]["source"]["rateLimit"] = {"requestsPerSecond": 20, "key": "shared20"}
        apply_job(operator, manifest)
    wait_for(lambda: stores[names[0]].rows() >= 100, timeout=90, what="progress")
    operator.kill()  # leases lapse; shards fall back to 20 / maxParallelism each
    time.sleep(6)
    operator.start()
    for name in names:
        s = wait_phase(operator, name, {"Succeeded", "PartiallySucceeded", "Failed"}, 240)
        assert s["phase"] == "Succeeded", s
    stats = simulator.stats()["vendors"]["shared20"]
    assert stats["total"] - before >= 600
    assert stats["maxOfferedPerSecond"] <= 20, stats["perSecond"]
    assert stats["byStatus"].get("429", 0) == 0


def test_5000_failing_items_stay_in_the_sink_and_the_syncjob_stays_small(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    canary = "canary-9f3b-never-printed"
    operator.cluster.kubectl(
        "create", "secret", "generic", "canary-keys", "-n", NS, f"--from-literal=token={canary}"
    )
    operator.cluster.kubectl("create", "serviceaccount", "workload-id", "-n", NS)
    db = store("bad")
    manifest = syncjob("plants-bad", simulator, db, count=5000, vendors=("allbad",))
    manifest["spec"]["deadLetter"] = {"maxItemFailures": 10000}
    manifest["spec"]["worker"] = {"serviceAccountName": "workload-id"}
    manifest["spec"]["source"]["http"]["auth"] = {
        "secretRef": {"name": "canary-keys", "key": "token"}
    }
    apply_job(operator, manifest)

    def pods_use_the_account() -> bool:
        pods = get_json(operator.cluster, "pods", "-n", NS, "-l", "fleetsync.dev/run=plants-bad")
        return bool(pods["items"]) and all(
            p["spec"]["serviceAccountName"] == "workload-id" for p in pods["items"]
        )

    wait_for(pods_use_the_account, timeout=60, what="pods under spec.worker.serviceAccountName")
    s = wait_phase(operator, "plants-bad", {"Succeeded", "PartiallySucceeded", "Failed"}, 240)
    # Nothing synced and every item failed: the run failed, whatever maxItemFailures allows.
    assert s["phase"] == "Failed", s
    failed = next(c for c in s["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "AllItemsFailed", failed
    assert s["failedItems"]["count"] == 5000
    assert len(s["failedItems"]["sample"]) == 20
    causes = s["failedItems"]["causes"]  # exact counts by cause, not from the sample
    assert sum(c["count"] for c in causes) == 5000 and len(causes) <= 17, causes
    assert db.dead_letters() == 5000
    body = operator.cluster.kubectl("get", "syncjob", "plants-bad", "-n", NS, "-o", "json").stdout
    assert len(body) < 32_000, len(body)  # status holds counts and a sample, not the items
    # The canary (the vendor credential) appears nowhere a user or operator can read.
    import httpx

    seen = [
        body,
        operator.cluster.kubectl("get", "events", "-n", NS, "-o", "json").stdout,
        operator.cluster.kubectl("get", "configmaps", "-n", NS, "-o", "json").stdout,
        httpx.get(f"{operator.url}/metrics", trust_env=False).text,
        operator.log_tail(100_000),
        *(
            operator.cluster.pod_log(NS, pod["metadata"]["name"])
            for pod in get_json(
                operator.cluster, "pods", "-n", NS, "-l", "fleetsync.dev/run=plants-bad"
            )["items"]
        ),
    ]
    assert len(seen) > 5  # the worker pods' logs are among them
    assert not any(canary in text for text in seen)


def test_a_worker_sent_sigterm_is_replaced_and_the_shard_resumes(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    db = store("term")
    before = simulator.stats()["vendors"]["slow"]["total"]
    manifest = syncjob("plants-term", simulator, db, vendors=("slow",), count=2000, shards=2,
                       parallelism=2)  # fmt: skip
    # Few requests in flight, so the shards are still working when one is terminated.
    manifest["spec"]["source"]["concurrency"] = {"mode": "fixed", "initial": 4, "min": 1, "max": 4}
    apply_job(operator, manifest)
    wait_for(lambda: db.rows() >= 300, timeout=90, what="progress")
    pods = get_json(operator.cluster, "pods", "-n", NS, "-l", "fleetsync.dev/run=plants-term")
    victim = next(p for p in pods["items"] if p["status"].get("phase") == "Running")
    name = victim["metadata"]["name"]
    log = operator.cluster.follow_log(NS, name)  # the pod and its log go with the deletion
    operator.cluster.kubectl("delete", "pod", name, "-n", NS, "--wait=false")  # SIGTERM
    s = wait_phase(operator, "plants-term", {"Succeeded", "PartiallySucceeded", "Failed"}, 240)
    assert s["phase"] == "Succeeded", s
    assert db.rows() == 2000
    assert s["items"]["synced"] + s["items"]["unchanged"] == 2000
    assert "exiting 75" in log() or "SIGTERM" in log()
    job = get_json(operator.cluster, "job", "plants-term", "-n", NS)["status"]
    assert job.get("failed", 0) == 0  # exit 75 is ignored by the podFailurePolicy
    fetched = simulator.stats()["vendors"]["slow"]["total"] - before
    assert fetched <= 2000 + 500, fetched  # at most one sink batch fetched again


def test_the_plants_example_scaled_down_succeeds(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / "examples/plants/syncjob.yaml").read_text()
    body = yaml.safe_load(text.replace("http://127.0.0.1:8765", simulator.url))
    body["metadata"]["name"] = "plants-example"
    body["spec"]["fleet"]["inventory"]["generate"]["count"] = 700  # the one scale parameter
    body["spec"]["sink"] = store("plants").sink()
    apply_job(operator, body)
    out = operator.cluster.kubectl(
        "wait", "--for=condition=Complete", "syncjob/plants-example", "-n", NS,
        "--timeout=120s", check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    s = status(operator, "plants-example")
    assert s["phase"] == "Succeeded" and s["items"]["synced"] == 700


def test_monotonic_on_dynamodb_counts_stale_items_and_reports_write_units(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    import boto3

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from support.dynamodb import moto_server

    with moto_server(host=TARGET.host) as endpoint:
        client = boto3.client(
            "dynamodb", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )  # fmt: skip
        client.create_table(
            TableName="plants-mono", BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
        )  # fmt: skip
        # Half the plants already hold newer data than the vendor will serve.
        for i in range(0, 100, 2):
            client.put_item(
                TableName="plants-mono",
                Item={"PK": {"S": f"PLANT#plants-mono-{i}"},
                      "updated_at": {"S": "2099-01-01T00:00:00Z"}},
            )  # fmt: skip
        operator.cluster.kubectl(
            "create", "secret", "generic", "aws", "-n", NS,
            "--from-literal=aws_access_key_id=test", "--from-literal=aws_secret_access_key=test",
        )  # fmt: skip
        manifest = syncjob("plants-mono", simulator, store("unused"), count=100,
                           shards=1, parallelism=1)  # fmt: skip
        manifest["spec"]["sink"] = {
            "dynamodb": {
                "table": "plants-mono", "endpointUrl": endpoint, "key": {"PK": "PLANT#{id}"},
                "credentialsSecretRef": {"name": "aws"},
            }
        }  # fmt: skip
        manifest["spec"]["write"] = {"monotonicOn": "updated_at"}
        apply_job(operator, manifest)
        s = wait_phase(operator, "plants-mono", {"Succeeded", "PartiallySucceeded", "Failed"}, 120)
        assert s["phase"] == "Succeeded", s
        assert s["items"]["stale"] == 50 and s["items"]["synced"] == 50, s["items"]
        assert s["cost"]["writeUnits"] >= 50  # conditional writes cost units, refused or not
        kept = client.get_item(TableName="plants-mono", Key={"PK": {"S": "PLANT#plants-mono-0"}})
        assert kept["Item"]["updated_at"]["S"] == "2099-01-01T00:00:00Z"


def test_deleting_a_namespace_with_a_running_syncjob_completes(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    """Kubernetes deletes a namespace's pods before its other objects (ordered namespace
    deletion, GA in 1.34); the Job controller keeps a failed pod's tracking finalizer until it
    has created the index's replacement (backoffLimitPerIndex), which a terminating namespace
    forbids. The controller must break that wait, and survive its namespace going away."""
    db = store("doomed")
    if isinstance(db, PostgresStore):  # its DSN Secret, in this namespace too
        operator.cluster.kubectl(
            "create", "secret", "generic", db.secret, "-n", DOOMED, f"--from-literal=dsn={db.dsn}"
        )
    manifest = syncjob("plants-doomed", simulator, db, vendors=("slow",), count=2000)
    manifest["metadata"]["namespace"] = DOOMED
    # Paced, so two shard pods are running at once for a while however fast the engine gets.
    manifest["spec"]["source"]["rateLimit"] = {"requestsPerSecond": 40}
    apply_job(operator, manifest)

    def running() -> bool:
        pods = get_json(operator.cluster, "pods", "-n", DOOMED)["items"]
        return sum(p["status"].get("phase") == "Running" for p in pods) >= 2

    wait_for(running, timeout=90, what="shard pods running")
    operator.cluster.kubectl("delete", "namespace", DOOMED, "--wait=false")
    try:
        wait_for(
            lambda: operator.cluster.kubectl("get", "namespace", DOOMED, check=False).returncode,
            timeout=120,
            what=f"namespace {DOOMED} deleted",
        )
    except AssertionError:
        print(operator.cluster.kubectl("get", "pods,jobs,syncjobs", "-n", DOOMED, "-o",
                                       "yaml", check=False).stdout[-4000:])  # fmt: skip
        raise
    # The controller goes on serving the namespace it still has.
    manifest = syncjob("plants-after", simulator, store("after"), count=100, shards=1)
    apply_job(operator, manifest)
    s = wait_phase(operator, "plants-after", {"Succeeded", "PartiallySucceeded", "Failed"}, 120)
    assert s["phase"] == "Succeeded", s
