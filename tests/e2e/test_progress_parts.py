"""A run's progress kept in several ConfigMaps round-trips through the real API server
(issue 14, item 9): what one controller writes for 250 shards (three parts), a restarted
controller reads back whole; a later write rewrites only the part that changed; every part
is owned by the SyncJob. The controller itself is not running here: the namespace is not
one it watches, so nothing else writes these objects."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fleetsync_operator import get_json

from fleetsync.api.progress import ReportWire
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.controller.kube import Kube, connect
from fleetsync.controller.plan import RunPlan
from fleetsync.controller.progress_parts import SHARDS_PER_PART
from fleetsync.controller.progress_store import ProgressStore, RunState, part_name
from fleetsync.coordination.progress import RunProgress

NS = "progress-parts"
RUN = "parts"
SHARDS = 250
SPEC: dict[str, Any] = {
    "fleet": {"kind": "plant", "key": "id", "inventory": {"generate": {"count": 2500}}},
    "source": {"http": {"url": "http://127.0.0.1:1/{id}"}},
    "sink": {"sqlite": {"path": "x.db", "table": "plants"}},
    "sharding": {"shards": SHARDS, "parallelism": 10},
    "suspend": True,
}


def report(shard: int, pod: str, state: str, synced: int) -> ReportWire:
    return {
        "run": RUN, "shard": shard, "pod": pod, "seq": synced + 1, "state": state,  # type: ignore[typeddict-item]
        "shardTotal": 10, "seen": 10,
        "checkpoint": {"watermark": synced - 1, "above": "", "counts": {"synced": synced}},
        "vendors": [{"name": f"v{shard % 3}", "calls": synced, "errors": 0, "throttled": 0,
                     "p95Ms": 12.5, "breaker": "closed", "breakerSince": None,
                     "breakerForced": False, "concurrency": 4, "limitKey": None,
                     "requestsPerSecond": None}],
        "failedSample": [], "wants": {},
        "cost": {"vendorCalls": synced, "sinkCalls": 1, "writeUnits": synced, "readUnits": 0,
                 "unprocessedItems": 0, "throttles": 0},
    }  # fmt: skip


def fresh_state(uid: str) -> RunState:
    spec = SyncJobSpec.model_validate(SPEC)
    return RunState(uid, spec, RunPlan(SHARDS, 10, "test"), RunProgress(RUN, SHARDS))


def views(progress: RunProgress) -> dict[int, tuple[str, str, Any]]:
    return {
        shard: (view.pod, view.state, progress.resume_for(shard))
        for shard, view in progress.views.items()
    }


async def round_trip(kubeconfig: str, syncjob: dict[str, Any]) -> None:
    kube = Kube(await connect(kubeconfig))
    try:
        key = (NS, RUN)
        store = ProgressStore(kube, lambda _: syncjob, interval=0.0)
        state = fresh_state(syncjob["metadata"]["uid"])
        state.loaded = True
        for shard in range(SHARDS):
            synced = 10 if shard % 2 else 4
            state.progress.take(report(shard, f"{RUN}-{shard}-a", "starting", 0), 1.0)
            state.progress.take(
                report(shard, f"{RUN}-{shard}-a", "done" if shard % 2 else "running", synced), 2.0
            )
        state.progress_dirty = True
        await store.persist(key, state, force=True)

        # A restarted controller: a new store and state, read from the API server.
        restarted = fresh_state(syncjob["metadata"]["uid"])
        await ProgressStore(kube, lambda _: syncjob, interval=0.0).load(key, restarted)
        assert views(restarted.progress) == views(state.progress)
        assert restarted.progress.items() == state.progress.items()
        assert restarted.progress.vendors() == state.progress.vendors()
        assert restarted.inherited

        # One shard moves on: only its part is written again.
        before = {i: await kube.read_config_map(NS, part_name(RUN, i)) for i in range(3)}
        shard = SHARDS_PER_PART + 4
        restarted.progress.take(report(shard, f"{RUN}-{shard}-a", "done", 10), 3.0)
        restarted.progress_dirty = True
        await store.persist(key, restarted, force=True)
        after = {i: await kube.read_config_map(NS, part_name(RUN, i)) for i in range(3)}
        versions = {i: (before[i] or {})["metadata"]["resourceVersion"] for i in before}
        changed = {
            i for i in after if (after[i] or {})["metadata"]["resourceVersion"] != versions[i]
        }
        assert changed == {1}, changed
        for cm in after.values():
            assert cm is not None
            (owner,) = cm["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["uid"]) == ("SyncJob", syncjob["metadata"]["uid"])
            assert len(json.dumps(cm["data"])) < 1024 * 1024

        again = fresh_state(syncjob["metadata"]["uid"])
        await ProgressStore(kube, lambda _: syncjob, interval=0.0).load(key, again)
        assert views(again.progress) == views(restarted.progress)
        assert again.progress.items() == restarted.progress.items()
    finally:
        await kube.close()


def test_progress_in_parts_survives_a_controller_restart(cluster: Any) -> None:
    crds = Path(__file__).parents[2] / "crds"
    cluster.kubectl("apply", "-f", str(crds))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/syncjobs.fleetsync.dev", "--timeout=60s"
    )
    cluster.kubectl("create", "namespace", NS, check=False)
    body = {"apiVersion": "fleetsync.dev/v1alpha1", "kind": "SyncJob",
            "metadata": {"name": RUN, "namespace": NS}, "spec": SPEC}  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    syncjob = get_json(cluster, "syncjob", RUN, "-n", NS)
    asyncio.run(round_trip(str(cluster.kubeconfig), syncjob))
