"""Cluster scale (issue 17 items 6 and 7): the controller and its worker pods on the e2e
suite's local control plane (kube-apiserver, etcd, kube-controller-manager and the process
kubelet of tests/e2e, reused as they are), measured from outside: /proc of the controller and
of the pods' processes, the SyncJobs' status as a user polls it, the apiserver's /metrics.

    python -m bench.cluster_scale --only fleet --fleet-size 20000   # item 6, vs `fleetsync run`
    python -m bench.cluster_scale --only controller                 # item 7: 200 SyncJobs at once
    python -m bench.cluster_scale --soak --minutes 30               # item 7's soak

A 100,000-device fleet takes many minutes per round on this shared 2-core machine, so the
default fleet is 20,000 (``--fleet-size`` or FLEETSYNC_BENCH_FLEET_SIZE); every table names
the size it ran and the load average next to its figures.

Not ``bench/cluster.py``: ruff's ``src`` holds ``bench``, so a ``bench/cluster.py`` makes the
e2e helpers' top-level ``cluster`` module (imported here too) first-party to isort, and
tests/e2e/conftest.py's imports fail ``ruff check``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.common import (
    ROOT,
    Settings,
    compile_as_installed,
    interleave,
    ratios,
    run_fleetsync,
    spread,
    spread_x,
)
from fleetsync.simulator import SimulatorConfig, SimulatorProcess, VendorConfig

E2E = ROOT / "tests" / "e2e"
FLEET_NS, CONTROL_NS, SOAK_NS = "iot", "bench-ctl", "bench-soak"
TERMINAL = {"Succeeded", "PartiallySucceeded", "Failed"}
STATUS_PATCH = {"resource": "syncjobs", "subresource": "status", "verb": "PATCH"}
TICK = os.sysconf("SC_CLK_TCK")
METADATA_ONLY = {"Accept": "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"}


def load() -> str:
    return "load " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


# --- /proc ------------------------------------------------------------------------------------


def _mib(pid: int, field: str) -> float:
    """VmRSS / VmHWM (peak) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in map(int, (task / "children").read_text().split()):
                found += [child, *_children(child)]
    return found


@dataclass(frozen=True)
class ProcSample:
    cpu: float  # utime + stime, seconds
    rss: float
    hwm: float
    sockets: int


def proc_sample(pid: int) -> ProcSample:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    fds = Path(f"/proc/{pid}/fd")
    sockets = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            sockets += os.readlink(fd).startswith("socket:")
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    return ProcSample(cpu, _mib(pid, "VmRSS"), _mib(pid, "VmHWM"), sockets)


class Sampler:
    """Calls ``sample`` every ``interval`` seconds in a thread while the block runs."""

    def __init__(self, interval: float, sample: Callable[[], None]) -> None:
        self.interval, self.sample = interval, sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a process gone between listing and reading
                self.sample()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# --- the cluster ------------------------------------------------------------------------------


@dataclass
class Cluster:
    """The e2e control plane, its process kubelet, the controller, an admin API client."""

    plane: Any
    kubelet: Any
    operator: Any
    http: httpx.Client

    def controller(self) -> ProcSample:
        return proc_sample(self.operator.process.pid)

    def worker_peaks(self, peaks: dict[int, float]) -> None:
        """The peak RSS (VmHWM) of every pod process and its children, by pid."""
        for running in list(self.kubelet.running.values()):
            for pid in (running.process.pid, *_children(running.process.pid)):
                with contextlib.suppress(OSError):
                    peaks[pid] = max(peaks.get(pid, 0.0), _mib(pid, "VmHWM"))

    def create(self, bodies: list[dict[str, Any]]) -> None:
        self.plane.kubectl("create", "-f", "-", input=yaml.safe_dump_all(bodies), timeout=300)

    def _path(self, resource: str, ns: str, api: str) -> str:
        return f"/apis/{api}/namespaces/{ns}/{resource}"

    def get(self, resource: str, ns: str, api: str = "fleetsync.dev/v1alpha1") -> Any:
        return self.http.get(self._path(resource, ns, api)).raise_for_status().json()

    def count(self, resource: str, ns: str, api: str) -> int:
        response = self.http.get(self._path(resource, ns, api), headers=METADATA_ONLY)
        return len(response.raise_for_status().json()["items"])

    def patch(self, resource: str, ns: str, body: dict[str, Any]) -> None:
        self.http.patch(
            self._path(resource, ns, "fleetsync.dev/v1alpha1"), json=body,
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()  # fmt: skip

    def requests(self) -> list[tuple[dict[str, str], float]]:
        """apiserver_request_total, each series' labels and value."""
        series = []
        for line in self.http.get("/metrics").raise_for_status().text.splitlines():
            if line.startswith("apiserver_request_total{"):
                labels, value = line.rsplit(" ", 1)
                series.append((dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)))
        return series

    def requests_matching(self, **wanted: str) -> float:
        return sum(v for labels, v in self.requests()
                   if all(labels.get(k) == w for k, w in wanted.items()))  # fmt: skip


@contextlib.contextmanager
def local_cluster(namespaces: tuple[str, ...]) -> Iterator[Cluster]:
    """Control plane + process kubelet + controller (the chart's RBAC, its own token), as
    tests/e2e/conftest.py and fleetsync_operator.py start them."""
    for path in (E2E / "controlplane", E2E):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    from cluster import ControlPlane  # type: ignore[import-not-found]
    from fleetsync_operator import Operator  # type: ignore[import-not-found]
    from kubelet import ProcessKubelet  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory(prefix="fleetsync-bench-") as tmp, \
            contextlib.ExitStack() as stack:  # fmt: skip
        root = Path(tmp)
        started = time.monotonic()
        plane = ControlPlane(root / "plane")
        plane.start(timeout=300)
        stack.callback(plane.stop)
        pki = plane.pki
        kubelet = ProcessKubelet(server=plane.server, ca=pki / "ca.crt", cert=pki / "admin.crt",
                                 key=pki / "admin.key", root=root / "node")  # fmt: skip
        kubelet.start()
        stack.callback(kubelet.stop)
        (root / "operator").mkdir()
        operator = Operator(plane, root / "operator", namespaces)
        operator.install()
        operator.start()
        stack.callback(operator.stop)
        http = stack.enter_context(
            httpx.Client(base_url=plane.server, verify=plane.ssl_context(), timeout=60)
        )
        print(f"  cluster up in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        yield Cluster(plane, kubelet, operator, http)


def _simulator() -> SimulatorProcess:
    vendor = VendorConfig()  # the simulator's defaults, as examples/simulator runs them
    return SimulatorProcess(SimulatorConfig(vendors={"devices": vendor, "meters": vendor}))


def _wait(what: str, ready: Callable[[], bool], timeout: float, interval: float = 0.25) -> float:
    started = time.monotonic()
    while not ready():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


# --- item 6: fleet scale ----------------------------------------------------------------------


def devices(name: str, count: int, base: str, db: Path) -> dict[str, Any]:
    """examples/devices/syncjob.yaml with its fleet size, the simulator's address and a
    fresh SQLite file: shards and parallelism auto, as the example plans them."""
    body: dict[str, Any] = yaml.safe_load((ROOT / "examples/devices/syncjob.yaml").read_text())
    body["metadata"] = {"name": name, "namespace": FLEET_NS}
    spec = body["spec"]
    spec["fleet"]["inventory"]["generate"]["count"] = count
    for vendor, item in (("devices", "0"), ("meters", "1")):
        spec["source"]["vendors"]["items"][item]["baseUrl"] = f"{base}/vendors/{vendor}"
    spec["sink"] = {"sqlite": {"path": str(db), "table": "devices"}}
    return body


def _rows(db: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=5)) as connection:
            return int(connection.execute("SELECT count(*) FROM devices").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not created yet


def staleness(samples: list[tuple[float, int, int, str]]) -> tuple[float, float]:
    """From (time, rows in the store, status's done count, phase) samples taken before the
    run finished: (a) the longest the status's progress stood still while Running; (b) the
    most the status trailed the store: at each sample, the seconds since the latest sample
    whose row count the status's done count had reached."""
    still, trail = 0.0, 0.0
    changed, last = samples[0][0] if samples else 0.0, -1
    for i, (t, _, done, phase) in enumerate(samples):
        if done != last:
            changed, last = t, done
        elif phase == "Running":
            still = max(still, t - changed)
        reached = [t0 for (t0, rows, _, _) in samples[: i + 1] if rows <= done]
        trail = max(trail, t - (max(reached) if reached else samples[0][0]))
    return still, trail


def _run_in_cluster(cluster: Cluster, name: str, count: int, base: str) -> dict[str, Any]:
    """Create one SyncJob and poll it to its end: seconds, staleness, peaks, controller CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "devices.db"
        cpu0 = cluster.controller().cpu
        peaks: dict[int, float] = {}
        samples: list[tuple[float, int, int, str]] = []
        with Sampler(0.5, lambda: cluster.worker_peaks(peaks)):
            started = time.monotonic()
            cluster.create([devices(name, count, base, db)])
            while True:
                status = cluster.get(f"syncjobs/{name}", FLEET_NS).get("status") or {}
                phase = str(status.get("phase", ""))
                if phase in TERMINAL:
                    seconds = time.monotonic() - started
                    break
                done = int(str(status.get("progress") or "0/0").split("/")[0])
                samples.append((time.monotonic(), _rows(db), done, phase))
                if time.monotonic() - started > 3600:
                    raise RuntimeError(f"{name} not finished after an hour: {status}")
                time.sleep(0.5)
        rows = _rows(db)
    still, trail = staleness(samples)
    plan = status.get("plan") or {}
    return {"seconds": seconds, "phase": phase, "rows": rows, "still": still, "trail": trail,
            "peak": max(peaks.values(), default=0.0), "pods": len(peaks),
            "cpu": (cluster.controller().cpu - cpu0) / (count / 1000),
            "plan": plan.get("reason", ""), "load": load()}  # fmt: skip


def fleet_size(settings: Settings) -> int:
    return settings.items(int(os.environ.get("FLEETSYNC_BENCH_FLEET_SIZE", "20000")), 1000)


def case_fleet(settings: Settings) -> list[str]:
    count = fleet_size(settings)
    runs: list[dict[str, Any]] = []
    local: list[Any] = []
    with _simulator() as sim, local_cluster((FLEET_NS,)) as cluster:

        def in_cluster() -> float:
            runs.append(_run_in_cluster(cluster, f"devices-{len(runs)}", count, sim.url))
            return float(runs[-1]["seconds"])

        def run() -> float:
            with tempfile.TemporaryDirectory() as tmp:
                local.append(run_fleetsync(devices("devices", count, sim.url, Path(tmp) / "d.db")))
            return float(local[-1].seconds)

        t = interleave(settings.repeat, {"cluster": in_cluster, "run": run})
    phases = sorted({r["phase"] for r in runs} | {r.summary["phase"] for r in local})

    def of(key: str, fmt: str = ".1f", unit: str = "") -> str:
        return spread([r[key] for r in runs], fmt, unit)

    return [
        f"## Fleet scale in the cluster: {count:,} devices (examples/devices), auto plan",
        "",
        "The e2e suite's local control plane and process kubelet; the controller a local "
        "process with the chart's RBAC. One SyncJob per round, created with kubectl and timed "
        "until a status poll (every 0.5 s) shows it finished; baseline: `fleetsync run` of the "
        f"same manifest on the same machine, interleaved. The controller's plan: "
        f"{runs[0]['plan'] or '(none in status)'}. Phases: {', '.join(phases)}; rows in the "
        f"sink after each cluster run: {', '.join(str(r['rows']) for r in runs)}. "
        f"Load at each cluster run's end: {'; '.join(r['load'] for r in runs)}.",
        "",
        "| program | seconds: median (min-max) | items/s (median) | peak RSS (MiB) |",
        "|---|---|---|---|",
        f"| SyncJob in the cluster | {spread(t['cluster'])} "
        f"| {count / statistics.median(t['cluster']):,.0f} "
        f"| {of('peak', '.0f')} (largest worker pod process of {runs[-1]['pods']}) |",
        f"| fleetsync run | {spread(t['run'])} | {count / statistics.median(t['run']):,.0f} "
        f"| {spread([r.peak_rss_mib for r in local], '.0f')} (largest process) |",
        "",
        f"- **cluster / fleetsync run** (time, per round): {spread_x(ratios(t['cluster'], t['run']))}.",
        f"- Worker peak RSS: {of('peak', '.0f', ' MiB')} — goal ≤ 200 MB (VmHWM of every pod "
        "process, read from /proc every 0.5 s while it runs).",
        f"- Status staleness: the progress stood still at most {of('still', '.1f', ' s')} while "
        f"Running; the status trailed the store's rows by at most {of('trail', '.1f', ' s')} "
        "(both sampled every 0.5 s) — goal ≤ 5 s.",
        f"- Controller CPU: {of('cpu', '.2f', ' s')} per 1,000 items (utime+stime from "
        "/proc/<controller>/stat across the run).",
        "",
    ]


# --- item 7: controller scale -----------------------------------------------------------------


def tiny_spec(name: str, base: str, db: Path, count: int, *, suspend: bool = False,
              rps: float | None = None) -> dict[str, Any]:  # fmt: skip
    """One shard, one pod: it is the controller under test, not the workers."""
    source: dict[str, Any] = {
        "http": {"url": "{vendor.baseUrl}/devices/{id}/state"},
        "vendors": {"by": "vendor", "items": {"0": {"baseUrl": f"{base}/vendors/devices"}}},
        "mapping": {"power_w": "$.data.power"},
    }
    if rps is not None:
        source["rateLimit"] = {"requestsPerSecond": rps, "key": name}
    generate = {"count": count, "idTemplate": f"{name}-{{i}}", "template": {"vendor": "0"}}
    return {"fleet": {"inventory": {"generate": generate}}, "source": source,
            "sink": {"sqlite": {"path": str(db), "table": "devices"}},
            "sharding": {"shards": 1, "parallelism": 1}, "suspend": suspend}  # fmt: skip


def _object(kind: str, name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "fleetsync.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": ns}, "spec": spec}  # fmt: skip


class Modifications:
    """Every MODIFIED event of a namespace's SyncJobs, timed: each one a write that changed
    the object (a status PATCH that changes nothing is no event, and no etcd write)."""

    def __init__(self, cluster: Cluster, ns: str) -> None:
        self.events: list[tuple[float, str]] = []
        self._path = cluster._path("syncjobs", ns, "fleetsync.dev/v1alpha1")
        self._rv = cluster.get("syncjobs", ns)["metadata"]["resourceVersion"]
        timeout = httpx.Timeout(10, read=None)
        self._http = httpx.Client(base_url=cluster.plane.server, timeout=timeout,
                                  verify=cluster.plane.ssl_context())  # fmt: skip
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        params = {"watch": "1", "resourceVersion": self._rv, "timeoutSeconds": "900"}
        with contextlib.suppress(Exception), \
                self._http.stream("GET", self._path, params=params) as response:  # fmt: skip
            for line in response.iter_lines():
                event = json.loads(line)
                if event.get("type") == "MODIFIED":
                    self.events.append((time.monotonic(), event["object"]["metadata"]["name"]))

    def count(self, names: set[str], since: float, until: float) -> int:
        return sum(since <= t <= until and name in names for t, name in list(self.events))

    def close(self) -> None:
        self._http.close()
        self._thread.join(timeout=5)


def controller_round(cluster: Cluster, base: str, tmp: Path, ns: str, n: int,
                     running: int) -> dict[str, Any]:  # fmt: skip
    """Create ``n`` suspended SyncJobs at once and time their Jobs; then resume ``running``
    of them (rate-limited, so they run a while) and count status writes per running one."""
    names = [f"sj-{i:03d}" for i in range(n)]
    bodies = [_object("SyncJob", x, ns, tiny_spec(x, base, tmp / f"{x}.db", 600, suspend=True,
                                                  rps=20)) for x in names]  # fmt: skip
    started = time.monotonic()
    cluster.create(bodies)
    created = time.monotonic() - started
    jobs = created + _wait(f"{n} Jobs", lambda: cluster.count("jobs", ns, "batch/v1") >= n, 300)
    time.sleep(5)  # the first statuses settle before the idle writes are counted
    watch = Modifications(cluster, ns)
    t0 = time.monotonic()
    time.sleep(15)
    idle = watch.count(set(names), t0, time.monotonic()) / (time.monotonic() - t0) / n
    for name in names[:running]:
        cluster.patch(f"syncjobs/{name}", ns, {"spec": {"suspend": False}})

    def active() -> int:
        items = cluster.get("syncjobs", ns)["items"]
        return sum((s.get("status") or {}).get("phase") == "Running" for s in items)

    _wait(f"{running} SyncJobs Running", lambda: active() == running, 300, 1)
    patches0, t0 = cluster.requests_matching(**STATUS_PATCH), time.monotonic()
    time.sleep(20)
    t1 = time.monotonic()
    patches = (cluster.requests_matching(**STATUS_PATCH) - patches0) / (t1 - t0)
    writes = watch.count(set(names[:running]), t0, t1) / (t1 - t0) / running
    still = active()
    watch.close()
    end = cluster.controller()
    cluster.plane.kubectl("delete", "syncjobs", "--all", "-n", ns, "--wait=false")
    return {"jobs": jobs, "create": created, "idle": idle, "patches": patches,
            "writes": writes, "still": still, "rss": end.rss, "hwm": end.hwm,
            "load": load()}  # fmt: skip


def case_controller(settings: Settings, n: int = 200, running: int = 10) -> list[str]:
    results: list[dict[str, Any]] = []
    namespaces = tuple(f"{CONTROL_NS}-{i}" for i in range(settings.repeat))
    with _simulator() as sim, local_cluster(namespaces) as cluster, \
            tempfile.TemporaryDirectory() as tmp:  # fmt: skip
        for ns in namespaces:
            results.append(controller_round(cluster, sim.url, Path(tmp), ns, n, running))
            print(f"  controller: {results[-1]}", file=sys.stderr, flush=True)

    def of(key: str, fmt: str = ".2f", unit: str = "") -> str:
        return spread([r[key] for r in results], fmt, unit)

    return [
        f"## Controller scale: {n} SyncJobs created at once",
        "",
        f"{n} SyncJobs (`spec.suspend: true`, one shard each, so {n} pods do not swamp 2 "
        "cores) created by one `kubectl create -f -` into a fresh namespace; timed from the "
        f"create until the API lists {n} Jobs (the controller creates a suspended Job for a "
        f"suspended SyncJob). Then {running} of them are resumed (600 items each at 20 req/s: "
        "~30 s of running) and their status writes counted over 20 s while they run: MODIFIED "
        "events of a watch on the namespace's SyncJobs (writes that changed the object); the "
        "status PATCH requests the apiserver counted in that window (`apiserver_request_total"
        '{resource="syncjobs",subresource="status",verb="PATCH"}`, every namespace, no-op '
        "patches included) are shown beside them. "
        f"{len(results)} round(s); {'; '.join(r['load'] for r in results)} at each round's end.",
        "",
        "| measure | median (min-max) | goal |",
        "|---|---|---|",
        f"| `kubectl create` of {n} SyncJobs returns | {of('create', '.1f', ' s')} | — |",
        f"| {n} Jobs exist, from the create | {of('jobs', '.1f', ' s')} | ≤ 10 s |",
        f"| status writes per suspended SyncJob per second | {of('idle', '.3f')} | — |",
        f"| status PATCH requests per second, all SyncJobs, while {running} run "
        f"| {of('patches', '.2f')} | — |",
        f"| status writes per running SyncJob per second | {of('writes', '.2f')} (Running at "
        f"the window's end: {of('still', '.0f')} of {running}) | ≤ 0.5 |",
        f"| controller RSS at the end (peak) | {of('rss', '.0f', ' MiB')} "
        f"({of('hwm', '.0f', ' MiB')}) | ≤ 150 MB |",
        "",
    ]


# --- item 7: the soak -------------------------------------------------------------------------


def _soak_sample(cluster: Cluster, ns: str) -> dict[str, Any]:
    by_resource: dict[str, float] = {}
    for labels, value in cluster.requests():
        key = labels.get("resource", "") or "(none)"
        by_resource[key] = by_resource.get(key, 0.0) + value
    items = cluster.get("syncjobs", ns)["items"]
    running = sum((s.get("status") or {}).get("phase") in ("Pending", "Running") for s in items)
    return {"t": time.monotonic(), "proc": cluster.controller(), "alive": len(items),
            "running": running, "requests": by_resource, "load": load()}  # fmt: skip


def soak(minutes: float, schedules: int, alive: int, history: int = 4) -> list[str]:
    """Schedules every minute, ``alive`` SyncJobs alive (schedules x history runs, padded
    with suspended SyncJobs); controller RSS, sockets and API requests once a minute."""
    pad = max(0, alive - schedules * history)
    with _simulator() as sim, local_cluster((SOAK_NS,)) as cluster, \
            tempfile.TemporaryDirectory() as tmp:  # fmt: skip
        bodies = [_object("SyncJob", f"idle-{i}", SOAK_NS,
                          tiny_spec(f"idle-{i}", sim.url, Path(tmp) / "idle.db", 10, suspend=True))
                  for i in range(pad)]  # fmt: skip
        for i in range(schedules):
            template = {"spec": tiny_spec(f"every-{i}", sim.url, Path(tmp) / f"s{i}.db", 20)}
            bodies.append(_object("SyncSchedule", f"every-{i}", SOAK_NS, {
                "schedule": "* * * * *", "concurrencyPolicy": "Forbid",
                "successfulJobsHistoryLimit": history, "failedJobsHistoryLimit": 1,
                "jobTemplate": template}))  # fmt: skip
        cluster.create(bodies)
        time.sleep(10)
        samples = [_soak_sample(cluster, SOAK_NS)]
        end = samples[0]["t"] + minutes * 60
        while time.monotonic() < end - 1:
            time.sleep(min(60.0, end - time.monotonic()))
            samples.append(_soak_sample(cluster, SOAK_NS))
            print(f"  soak: {samples[-1]}", file=sys.stderr, flush=True)
    return _soak_lines(minutes, schedules, pad, samples)


def _soak_lines(
    minutes: float, schedules: int, pad: int, samples: list[dict[str, Any]]
) -> list[str]:
    rows = []
    for before, after in itertools.pairwise(samples):
        per_min = 60 / (after["t"] - before["t"])
        delta = {k: v - before["requests"].get(k, 0.0) for k, v in after["requests"].items()}
        top = sorted(delta.items(), key=lambda kv: -kv[1])[:4]
        rows.append(
            f"| {(after['t'] - samples[0]['t']) / 60:.1f} | {after['alive']} ({after['running']}) "
            f"| {after['proc'].rss:.0f} | {after['proc'].sockets} "
            f"| {sum(delta.values()) * per_min:,.0f} "
            f"| {', '.join(f'{k} {v * per_min:,.0f}' for k, v in top)} | {after['load']} |"
        )
    first, last = samples[0], samples[-1]
    return [
        f"## Soak: {minutes:g} minutes, {schedules} SyncSchedules firing every minute",
        "",
        f"{schedules} SyncSchedules (`* * * * *`, Forbid, 20 items, one shard, history 4) and "
        f"{pad} suspended SyncJobs, so about {schedules * 4 + pad} SyncJobs are alive once the "
        "histories fill. Controller from /proc (VmRSS, socket fds); API requests from the "
        "apiserver's `apiserver_request_total`, all clients (the process kubelet lists pods "
        "5 times a second: ~300 of each minute's pod requests are its own).",
        "",
        "| minute | SyncJobs alive (pending or running) | controller RSS (MiB) | controller sockets "
        "| API requests/min | top resources/min | load |",
        "|---|---|---|---|---|---|---|",
        f"| 0 | {first['alive']} ({first['running']}) | {first['proc'].rss:.0f} "
        f"| {first['proc'].sockets} | — | — | {first['load']} |",
        *rows,
        "",
        f"- Controller RSS {first['proc'].rss:.0f} → {last['proc'].rss:.0f} MiB (peak "
        f"{last['proc'].hwm:.0f}); sockets {first['proc'].sockets} → {last['proc'].sockets}; "
        f"CPU {last['proc'].cpu - first['proc'].cpu:.1f} s over the soak.",
        "",
    ]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="fleet,controller", help="fleet, controller or both")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per case (default 3)")
    parser.add_argument("--fleet-size", type=int, help="devices in the fleet case (default 20000)")
    parser.add_argument("--soak", action="store_true", help="run the soak instead of the cases")
    parser.add_argument("--minutes", type=float, default=30, help="soak length (default 30)")
    parser.add_argument("--schedules", type=int, default=10, help="soak: schedules (default 10)")
    parser.add_argument("--alive", type=int, default=50, help="soak: SyncJobs alive (default 50)")
    parser.add_argument("--output", type=Path, help="also write the markdown to this file")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    if args.fleet_size:
        os.environ["FLEETSYNC_BENCH_FLEET_SIZE"] = str(args.fleet_size)
    compile_as_installed()
    settings = Settings(repeat=args.repeat, scale=1.0)
    lines = [
        f"`python -m bench.cluster_scale {' '.join(sys.argv[1:])}`; at the start {load()}.",
        "",
    ]
    if args.soak:
        lines += soak(args.minutes, args.schedules, args.alive)
    else:
        cases = {"fleet": case_fleet, "controller": case_controller}
        for name in [c for c in args.only.split(",") if c]:
            print(name, file=sys.stderr, flush=True)
            lines += cases[name](settings)
    lines += [f"At the end: {load()}.", ""]
    text = "\n".join(lines)
    if args.output is not None:
        args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
