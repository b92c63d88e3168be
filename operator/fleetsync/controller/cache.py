"""What the watch streams have shown: SyncJobs, SyncSchedules, and the Jobs and pods
fleetsync owns, keyed by (namespace, name), with the two label indexes the reconcile asks
for on every tick — a schedule's runs and a run's pods — so neither is a scan of the cache.

Nothing here calls the API: kopf's event handlers (handlers.py) feed ``remember``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from fleetsync.controller.build import LABEL_RUN, LABEL_SCHEDULE
from fleetsync.controller.objects import Job, KubeObject, Pod, SyncJobObject, SyncScheduleObject

__all__ = ["Body", "Key", "WatchCache", "key_of"]

Key = tuple[str, str]  # (namespace, name)
Body = Mapping[str, Any]  # a body as kopf hands it over, before it is typed by its kind
_INDEXED = {"SyncJob": LABEL_SCHEDULE, "Pod": LABEL_RUN}


def key_of(body: Body) -> Key:
    meta = body.get("metadata") or {}
    return (meta.get("namespace", ""), meta.get("name", ""))


def _label(body: Body, label: str) -> str | None:
    value = ((body.get("metadata") or {}).get("labels") or {}).get(label)
    return str(value) if value else None


class WatchCache:
    """The latest body of every watched object, and who points at whom by label."""

    def __init__(self) -> None:
        self.syncjobs: dict[Key, SyncJobObject] = {}
        self.schedules: dict[Key, SyncScheduleObject] = {}
        self.jobs: dict[Key, Job] = {}
        self.pods: dict[Key, Pod] = {}
        # (namespace, label value) -> names: runs of a schedule, pods of a run.
        self._index: dict[str, dict[Key, set[str]]] = {kind: {} for kind in _INDEXED}

    def _table(self, kind: str) -> dict[Key, KubeObject]:
        return {  # type: ignore[return-value]  # each table holds its kind's TypedDict
            "SyncJob": self.syncjobs,
            "SyncSchedule": self.schedules,
            "Job": self.jobs,
            "Pod": self.pods,
        }[kind]

    def get(self, kind: str, key: Key) -> KubeObject | None:
        return self._table(kind).get(key)

    def remember(self, kind: str, event_type: str | None, body: Body) -> Key:
        """Store or drop one object; returns its key."""
        key = key_of(body)
        table = self._table(kind)
        old = table.pop(key, None)
        if old is not None:
            self._unindex(kind, key, old)
        if event_type != "DELETED":
            table[key] = cast(KubeObject, dict(body))
            self._reindex(kind, key, body)
        return key

    def _unindex(self, kind: str, key: Key, body: Body) -> None:
        label = _INDEXED.get(kind)
        value = _label(body, label) if label else None
        if value is None:
            return
        index = self._index[kind]
        names = index.get((key[0], value))
        if names is not None:
            names.discard(key[1])
            if not names:
                del index[(key[0], value)]

    def _reindex(self, kind: str, key: Key, body: Body) -> None:
        label = _INDEXED.get(kind)
        value = _label(body, label) if label else None
        if value is not None:
            self._index[kind].setdefault((key[0], value), set()).add(key[1])

    def pods_of(self, run: Key) -> list[Pod]:
        """The pods labelled as ``run``'s shards."""
        names = self._index["Pod"].get(run, set())
        return [self.pods[(run[0], name)] for name in sorted(names)]

    def runs_of(self, namespace: str, schedule: str) -> list[SyncJobObject]:
        """The schedule's SyncJobs not being deleted, oldest first."""
        names = self._index["SyncJob"].get((namespace, schedule), set())
        bodies = (self.syncjobs[(namespace, name)] for name in sorted(names))
        return sorted(
            (b for b in bodies if not b["metadata"].get("deletionTimestamp")),
            key=lambda b: b["metadata"].get("creationTimestamp", ""),
        )
