"""What the watch streams have shown: SyncJobs, SyncSchedules, and the Jobs and pods
fleetsync owns, keyed by (namespace, name), with the two label indexes the reconcile asks
for on every tick — a schedule's runs and a run's pods — so neither is a scan of the cache.

Nothing here calls the API: kopf's event handlers (handlers.py) feed ``remember``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetsync.controller.build import LABEL_RUN, LABEL_SCHEDULE

__all__ = ["Body", "Key", "WatchCache", "key_of"]

Key = tuple[str, str]  # (namespace, name)
Body = Mapping[str, Any]
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
        self.syncjobs: dict[Key, dict[str, Any]] = {}
        self.schedules: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, Any]] = {}
        self.pods: dict[Key, dict[str, Any]] = {}
        # (namespace, label value) -> names: runs of a schedule, pods of a run.
        self._index: dict[str, dict[Key, set[str]]] = {kind: {} for kind in _INDEXED}

    def _table(self, kind: str) -> dict[Key, dict[str, Any]]:
        return {
            "SyncJob": self.syncjobs,
            "SyncSchedule": self.schedules,
            "Job": self.jobs,
            "Pod": self.pods,
        }[kind]

    def get(self, kind: str, key: Key) -> dict[str, Any] | None:
        return self._table(kind).get(key)

    def remember(self, kind: str, event_type: str | None, body: Body) -> Key:
        """Store or drop one object; returns its key."""
        key = key_of(body)
        table = self._table(kind)
        old = table.pop(key, None)
        if old is not None:
            self._unindex(kind, key, old)
        if event_type != "DELETED":
            table[key] = dict(body)
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

    def pods_of(self, run: Key) -> list[dict[str, Any]]:
        """The pods labelled as ``run``'s shards."""
        names = self._index["Pod"].get(run, set())
        return [self.pods[(run[0], name)] for name in sorted(names)]

    def runs_of(self, namespace: str, schedule: str) -> list[dict[str, Any]]:
        """The schedule's SyncJobs not being deleted, oldest first."""
        names = self._index["SyncJob"].get((namespace, schedule), set())
        bodies = (self.syncjobs[(namespace, name)] for name in sorted(names))
        return sorted(
            (b for b in bodies if not b["metadata"].get("deletionTimestamp")),
            key=lambda b: b["metadata"].get("creationTimestamp", ""),
        )
