"""Which namespaces are being deleted, so their runs are released instead of resumed.

Kubernetes deletes a namespace's pods before anything else in it (ordered namespace
deletion, GA in 1.34). A shard pod that fails there keeps the Job controller's tracking
finalizer until the Job has created the index's replacement pod (backoffLimitPerIndex),
which a terminating namespace refuses: the namespace would never go. A Job being deleted
releases its pods' finalizers at once, so the run's Job is deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from fleetsync.controller.cache import Key
from fleetsync.controller.kube import Kube
from fleetsync.controller.objects import Job, Pod

__all__ = ["PROBE_INTERVAL", "TERMINATING_MEMORY_SECONDS", "NamespaceWatch"]

log = logging.getLogger("fleetsync.controller")
# A namespace never stops terminating, but one of the same name may be created later.
TERMINATING_MEMORY_SECONDS = 60.0
PROBE_INTERVAL = 5.0  # at most one API probe per namespace per this


class NamespaceWatch:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.terminating: dict[str, float] = {}  # namespace -> when seen being deleted
        self._probed: dict[str, float] = {}  # namespace -> when last probed for that

    def mark(self, namespace: str) -> None:
        """Remember that the API refused a write because ``namespace`` is terminating."""
        if namespace not in self.terminating:
            log.info("namespace %s is being deleted: its runs are released, not resumed", namespace)
        self.terminating[namespace] = time.monotonic()

    def known(self, namespace: str) -> bool:
        marked = self.terminating.get(namespace)
        return marked is not None and time.monotonic() - marked < TERMINATING_MEMORY_SECONDS

    async def release(self, key: Key, job: Job | None, pods: Sequence[Pod], now: float) -> bool:
        """True when the run's namespace is being deleted; its Job is then deleted.

        Probed only when one of the run's pods is being deleted, at most every
        ``PROBE_INTERVAL`` seconds per namespace."""
        namespace = key[0]
        if not self.known(namespace):
            deleting = any(p["metadata"].get("deletionTimestamp") for p in pods)
            if not deleting or now - self._probed.get(namespace, -1e9) < PROBE_INTERVAL:
                return False
            self._probed[namespace] = now
            if not await self.kube.namespace_terminating(namespace):
                return False
            self.mark(namespace)
        if job is not None and not job["metadata"].get("deletionTimestamp"):
            log.info("deleting Job %s/%s: its namespace is being deleted", *key)
            await self.kube.delete_job(*key)
        return True
