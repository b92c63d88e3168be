"""What GitOps tools conclude about live SyncJobs and SyncSchedules (issue 15, items 2 and 4).

Flux, kpt and Helm 4 `--wait` judge a resource with kstatus; Argo CD with a Lua health
script (it has no generic condition handling for custom kinds). Each test here lets the real
controller write an object's status, reads it back with `kubectl get -o json`, and runs
tests/tools/health on it: kstatus from sigs.k8s.io/cli-utils, and the chart's
files/argocd-health.lua under gopher-lua, as Argo CD runs it. The same rows without a
cluster are in tests/unit/test_health_tool.py.

A verdict that depends on the controller catching up is awaited (bounded); a verdict that
must hold at every moment (InProgress while Pending/Running) is checked on every snapshot.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleetsync_operator import HelmOperator, Operator, running_operator, wait_for
from stores import PostgresStore, SqliteStore, Store
from target import TARGET

from fleetsync.simulator import SimulatorConfig, SimulatorProcess, VendorConfig

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "charts/fleetsync/files/argocd-health.lua"
NS = "gitops"
Verdict = tuple[str, str]  # (kstatus, argo)
FINISHED = {"Succeeded", "PartiallySucceeded", "Failed"}


@cache
def tool() -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "tests/tools/health/build.sh")],
        check=True, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def operator(
    cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator | HelmOperator]:
    tool()  # built before the controller starts, so its build is not a run's wait
    with running_operator(cluster, tmp_path_factory.mktemp("operator"), (NS,)) as op:
        yield op
        print(op.log_tail(200))


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorProcess]:
    config = SimulatorConfig(
        vendors={
            "fast": VendorConfig(latency={"p50Ms": 2, "p99Ms": 10}),
            "slow": VendorConfig(latency={"p50Ms": 40, "p99Ms": 80}),
            "allbad": VendorConfig.model_validate(
                {"latency": {"p50Ms": 1, "p99Ms": 5}, "malformedRate": 1.0}
            ),
        }
    )
    config.host = TARGET.host
    config.allow_non_loopback = not ipaddress.ip_address(TARGET.host).is_loopback
    with SimulatorProcess(config) as sim:
        yield sim


_tables = itertools.count()


@pytest.fixture
def store(operator: Any, tmp_path: Path, postgres_dsn: str | None) -> Callable[[str], Store]:
    def make(name: str) -> Store:
        if postgres_dsn is None:
            return SqliteStore(tmp_path / f"{name}.db")
        operator.cluster.kubectl(
            "create", "secret", "generic", "health-postgres", "-n", NS,
            f"--from-literal=dsn={postgres_dsn}", check=False,
        )  # fmt: skip
        table = f"health_{next(_tables)}_{name.replace('-', '_')}"
        return PostgresStore(postgres_dsn, table, "health-postgres")

    return make


def syncjob(
    name: str, simulator: SimulatorProcess, store: Store, *, vendors: tuple[str, ...],
    count: int, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {
        "fleet": {"kind": "plant", "key": "id", "inventory": {"generate": {
            "count": count, "idTemplate": f"{name}-{{i}}",
            "template": {"vendor": "{i%" + str(len(vendors)) + "}"},
        }}},
        "source": {
            "http": {"url": "{vendor.baseUrl}/plants/{id}/realtime"},
            "vendors": {"by": "vendor", "items": {
                str(i): {"baseUrl": f"{simulator.url}/vendors/{v}"} for i, v in enumerate(vendors)
            }},
            "retry": {"maxAttempts": 1},
            "mapping": {"power": "$.data.power", "updated_at": "$.data.updated_at"},
        },
        "sink": store.sink(),
        "sharding": {"shards": 1, "parallelism": 1},
        **extra,
    }  # fmt: skip
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def schedule(name: str, template: dict[str, Any], **spec: Any) -> dict[str, Any]:
    # Once a year at midnight on 1 January: no tick lands during a test.
    return {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncSchedule",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": template["spec"]}, **spec},
    }


def apply(operator: Any, manifest: dict[str, Any]) -> None:
    operator.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))


def snapshot(operator: Any, kind: str, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The live object and the tools' verdicts on exactly that object."""
    body = operator.cluster.kubectl("get", kind, name, "-n", NS, "-o", "json").stdout
    done = subprocess.run(
        [tool(), "-lua", str(SCRIPT)], input=body, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [verdict] = [json.loads(line) for line in done.stdout.splitlines()]
    return json.loads(body), verdict


def await_verdict(
    operator: Any, kind: str, name: str, expected: Verdict, timeout: float = 60
) -> tuple[dict[str, Any], dict[str, str]]:
    """Wait until the tools say ``expected`` (the controller may still be catching up)."""
    last: list[Any] = []

    def reached() -> tuple[dict[str, Any], dict[str, str]] | None:
        obj, verdict = snapshot(operator, kind, name)
        last[:] = [verdict, obj.get("metadata", {}).get("generation"), obj.get("status")]
        return (obj, verdict) if (verdict["kstatus"], verdict["argo"]) == expected else None

    try:
        found: tuple[dict[str, Any], dict[str, str]] = wait_for(
            reached, timeout=timeout, interval=1, what=f"{kind}/{name} to read {expected}"
        )
    except AssertionError as error:
        print(operator.log_tail(80))
        raise AssertionError(f"{error}\nlast verdict, generation, status: {last}") from None
    return found


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    raise AssertionError(f"no {kind} condition in {obj.get('status')}")


def observed(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    generation = obj["metadata"]["generation"]
    return status.get("observedGeneration") == generation and all(
        c.get("observedGeneration") == generation for c in status.get("conditions") or []
    )


def delete(operator: Any, kind: str, name: str) -> None:
    operator.cluster.kubectl("delete", kind, name, "-n", NS, "--wait=false", check=False)


# --- SyncJob ---------------------------------------------------------------------------------


def test_a_run_is_in_progress_until_it_succeeds_then_current_and_healthy(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    manifest = syncjob("h-run", simulator, store("run"), vendors=("slow",), count=400)
    # ~10 s of running at 40 req/s: long enough to be seen Running between status writes,
    # however fast the engine gets.
    manifest["spec"]["source"]["rateLimit"] = {"requestsPerSecond": 40}
    apply(operator, manifest)
    seen: dict[str, int] = {}
    wrong: list[tuple[str, dict[str, str]]] = []

    def finished() -> bool:
        obj, verdict = snapshot(operator, "syncjob", "h-run")
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Pending", "Running"):
            seen[phase] = seen.get(phase, 0) + 1
            if (verdict["kstatus"], verdict["argo"]) != ("InProgress", "Progressing"):
                wrong.append((phase, verdict))
        return phase in FINISHED

    wait_for(finished, timeout=240, interval=0.5, what="h-run finished")
    print(f"snapshots per phase: {seen}")
    assert seen.get("Running"), f"never saw the run Running: {seen}"
    assert not wrong, wrong
    obj, verdict = await_verdict(operator, "syncjob", "h-run", ("Current", "Healthy"))
    assert obj["status"]["phase"] == "Succeeded"
    assert "400 items in sync" in verdict["argoMessage"], verdict
    assert observed(obj), obj["status"]


def test_a_partially_succeeded_run_is_current_and_healthy_saying_how_many_failed(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    manifest = syncjob("h-partial", simulator, store("partial"), vendors=("fast", "allbad"),
                       count=20, deadLetter={"maxItemFailures": 100})  # fmt: skip
    apply(operator, manifest)
    obj, verdict = await_verdict(operator, "syncjob", "h-partial", ("Current", "Healthy"), 180)
    assert obj["status"]["phase"] == "PartiallySucceeded", obj["status"]
    assert "10 of 20 items failed" in verdict["argoMessage"], verdict
    assert condition(obj, "Degraded")["status"] == "True"


def test_a_failed_run_is_failed_and_degraded_with_the_failed_message(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    # Valid for the API server, refused by the worker (exit 64): the Secret lacks the key.
    operator.cluster.kubectl(
        "create", "secret", "generic", "keys-without-token", "-n", NS, "--from-literal=other=x",
        check=False,
    )  # fmt: skip
    manifest = syncjob("h-failed", simulator, store("failed"), vendors=("fast",), count=5)
    manifest["spec"]["source"]["http"]["auth"] = {
        "secretRef": {"name": "keys-without-token", "key": "token"}
    }
    apply(operator, manifest)
    obj, verdict = await_verdict(operator, "syncjob", "h-failed", ("Failed", "Degraded"), 180)
    failed = condition(obj, "Failed")
    assert failed["status"] == "True" and failed["message"], failed
    assert verdict["argoMessage"] == failed["message"], verdict
    assert verdict["kstatusMessage"] == condition(obj, "Stalled")["message"], verdict


def test_a_suspended_run_is_current_and_suspended(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    """Suspended is a deliberate, stable state: `helm --wait` and Flux must not hang on it.
    kstatus has no message of its own for a Current custom resource ("Resource is Ready" or
    "Resource is current"), so the word "suspended" is read from the Suspended condition."""
    manifest = syncjob("h-suspend", simulator, store("suspend"), vendors=("slow",), count=2000)
    # ~50 s of running at 40 req/s, so the suspend lands mid-run however fast the engine
    # gets (adaptive concurrency's slow start fetches 2,000 items at 40 ms in about a second).
    manifest["spec"]["source"]["rateLimit"] = {"requestsPerSecond": 40}
    apply(operator, manifest)
    wait_for(
        lambda: (snapshot(operator, "syncjob", "h-suspend")[0].get("status") or {}).get("phase")
        == "Running",
        timeout=120, interval=1, what="h-suspend Running",
    )  # fmt: skip
    operator.cluster.kubectl(
        "patch", "syncjob", "h-suspend", "-n", NS, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    try:
        obj, verdict = await_verdict(operator, "syncjob", "h-suspend", ("Current", "Suspended"))
        assert obj["status"]["phase"] == "Suspended"
        suspended = condition(obj, "Suspended")
        assert suspended["status"] == "True" and "suspend" in suspended["message"].lower()
        assert "suspend" in verdict["argoMessage"].lower(), verdict
        assert observed(obj), obj["status"]
    finally:
        delete(operator, "syncjob", "h-suspend")


def test_editing_a_finished_run_is_in_progress_until_the_controller_observes_it(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    """The edit lands while the controller is down, so "generation ahead" is seen for sure;
    once it is back it must stamp observedGeneration on the finished run (kubectl wait,
    Flux and helm --wait otherwise wait for ever). ttlSecondsAfterFinished stays editable
    on a finished run (issue 15, item 1)."""
    apply(operator, syncjob("h-edit", simulator, store("edit"), vendors=("fast",), count=10))
    await_verdict(operator, "syncjob", "h-edit", ("Current", "Healthy"), 180)
    operator.kill()
    try:
        operator.cluster.kubectl(
            "patch", "syncjob", "h-edit", "-n", NS, "--type=merge",
            "-p", '{"spec":{"ttlSecondsAfterFinished":3600}}',
        )  # fmt: skip
        obj, verdict = snapshot(operator, "syncjob", "h-edit")
        assert obj["metadata"]["generation"] == 2, obj["metadata"]
        assert (verdict["kstatus"], verdict["argo"]) == ("InProgress", "Progressing"), verdict
        assert "generation is 2" in verdict["kstatusMessage"], verdict
        assert "generation 2" in verdict["argoMessage"], verdict
    finally:
        operator.start()
    obj, _ = await_verdict(operator, "syncjob", "h-edit", ("Current", "Healthy"))
    assert obj["status"]["phase"] == "Succeeded" and observed(obj), obj["status"]


# --- SyncSchedule ----------------------------------------------------------------------------


def test_a_valid_schedule_is_current_and_healthy(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    template = syncjob("x", simulator, store("sched-ok"), vendors=("fast",), count=5)
    apply(operator, schedule("h-sched-ok", template))
    try:
        obj, _ = await_verdict(operator, "syncschedule", "h-sched-ok", ("Current", "Healthy"))
        assert condition(obj, "Ready")["status"] == "True"
        assert observed(obj), obj["status"]
    finally:
        delete(operator, "syncschedule", "h-sched-ok")


def test_an_invalid_schedule_is_failed_naming_the_field_until_it_is_fixed(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    """The API server accepts any string as timeZone; the controller cannot. Stalled names
    the field; once corrected the schedule is validated again and becomes Ready."""
    template = syncjob("x", simulator, store("sched-bad"), vendors=("fast",), count=5)
    apply(operator, schedule("h-sched-bad", template, timeZone="Mars/Olympus"))
    try:
        obj, verdict = await_verdict(
            operator, "syncschedule", "h-sched-bad", ("Failed", "Degraded")
        )
        stalled = condition(obj, "Stalled")
        assert stalled["status"] == "True" and stalled["reason"] == "InvalidSpec", stalled
        assert "timeZone" in stalled["message"], stalled
        assert "timeZone" in verdict["kstatusMessage"] and "timeZone" in verdict["argoMessage"]
        assert observed(obj), obj["status"]
        operator.cluster.kubectl(
            "patch", "syncschedule", "h-sched-bad", "-n", NS, "--type=merge",
            "-p", '{"spec":{"timeZone":"Europe/Berlin"}}',
        )  # fmt: skip
        obj, _ = await_verdict(operator, "syncschedule", "h-sched-bad", ("Current", "Healthy"))
        assert condition(obj, "Stalled")["status"] == "False" and observed(obj), obj["status"]
    finally:
        delete(operator, "syncschedule", "h-sched-bad")


def test_a_suspended_schedule_is_current_and_suspended(
    operator: Any, simulator: SimulatorProcess, store: Callable[[str], Store]
) -> None:
    template = syncjob("x", simulator, store("sched-off"), vendors=("fast",), count=5)
    apply(operator, schedule("h-sched-off", template, suspend=True))
    try:
        obj, verdict = await_verdict(
            operator, "syncschedule", "h-sched-off", ("Current", "Suspended")
        )
        suspended = condition(obj, "Suspended")
        assert suspended["status"] == "True" and "suspend" in suspended["message"].lower()
        assert "suspend" in verdict["argoMessage"].lower(), verdict
        assert observed(obj), obj["status"]
    finally:
        delete(operator, "syncschedule", "h-sched-off")
