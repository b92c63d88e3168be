"""In-memory fakes for unit tests of pure engine logic (integration tests use real servers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fleetsync.controller.build import WorkerSettings
from fleetsync.controller.runtime import Controller, ControllerSettings
from fleetsync.sinks.base import DeadLetter, Record, RecordState, SinkCost, WriteResult

# A SyncJob the controller's unit tests reconcile: energy/plants, 20 items.
SYNCJOB_KEY = ("energy", "plants")
SYNCJOB: dict[str, Any] = {
    "apiVersion": "fleetsync.dev/v1alpha1",
    "kind": "SyncJob",
    "metadata": {"name": "plants", "namespace": "energy", "uid": "u1", "generation": 1},
    "spec": {
        "fleet": {"kind": "plant", "key": "id", "inventory": {"generate": {"count": 20}}},
        "source": {"http": {"url": "http://127.0.0.1:1/{id}"}},
        "sink": {"sqlite": {"path": "x.db", "table": "plants"}},
        "sharding": {"shards": 2, "parallelism": 2},
    },
}


def controller_knowing_syncjob(kube: Any) -> Controller:
    """A controller over ``kube`` (a stand-in for the Kubernetes API) that has seen SYNCJOB."""
    controller = Controller(
        kube, ControllerSettings(worker=WorkerSettings(image="x", report_url="http://c"))
    )
    controller.remember("SyncJob", "ADDED", SYNCJOB)
    return controller


class MemorySink:
    """Keeps records in a dict; honours the monotonic guard like the real sinks."""

    max_batch_size = 25
    max_concurrent_writes = 4

    def __init__(self, *, monotonic: bool = False, fail_keys: Sequence[str] = ()) -> None:
        self.rows: dict[str, Record] = {}
        # (run, key, member), or (run, key) for a letter without a member: groups keep
        # every member, as in the real sinks.
        self.letters: dict[tuple[str, str], DeadLetter] = {}
        self.members: dict[tuple[str, str, str], DeadLetter] = {}
        self.monotonic = monotonic
        self.fail_keys = set(fail_keys)
        self.batches: list[list[str]] = []
        self._cost = SinkCost()

    @property
    def cost(self) -> SinkCost:
        return self._cost

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def read_state(self, keys: Sequence[str]) -> Mapping[str, RecordState]:
        self._cost.calls += 1
        return {
            k: RecordState(r.content_hash, r.synced_at, r.monotonic_value)
            for k in keys
            if (r := self.rows.get(k)) is not None
        }

    async def write_batch(self, records: Sequence[Record]) -> WriteResult:
        self._cost.calls += 1
        self.batches.append([r.key for r in records])
        result = WriteResult()
        for record in records:
            old = self.rows.get(record.key)
            if record.key in self.fail_keys:
                result.failed[record.key] = "refused"
            elif (
                self.monotonic
                and old is not None
                and old.monotonic_value is not None
                and record.monotonic_value is not None
                and record.monotonic_value < old.monotonic_value  # type: ignore[operator]
            ):
                result.stale.append(record.key)
            else:
                self.rows[record.key] = record
                result.written.append(record.key)
        return result

    async def write_dead_letters(self, run: str, letters: Sequence[DeadLetter]) -> None:
        self._cost.calls += 1
        for letter in letters:
            # Every member of a key keeps its letter, as in the real sinks; ``letters`` is
            # the view by (run, key) the tests read (the latest member of each key).
            self.members[(run, letter.key, letter.member)] = letter
            self.letters[(run, letter.key)] = letter

    async def read_dead_letters(self, run: str, limit: int | None = None) -> list[DeadLetter]:
        letters = sorted((k, v) for k, v in self.members.items() if k[0] == run)
        return [v for _, v in letters][:limit]

    async def clear_dead_letters(self, run: str, keys: Sequence[str]) -> None:
        for store in (self.letters, self.members):
            for key in [k for k in store if k[0] == run and k[1] in set(keys)]:
                del store[key]
