"""A finished (or failed) local run as the same fields the SyncJob status carries.

``fleetsync run --output json`` prints :func:`summary_json` as its last stdout line, so
scripts read ``phase``, ``items``, ``durationSeconds``, ``cost``, ``vendors`` and
``failedItems`` exactly as they would from ``kubectl get sj -o json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fleetsync.api.constants import ExitCode, Phase
from fleetsync.api.v1alpha1.status import Cost, FailedItem, ItemCounts, VendorStatus

__all__ = ["RunSummary", "exit_code_for"]


@dataclass(slots=True)
class RunSummary:
    run: str
    phase: Phase
    reason: str
    message: str
    items: ItemCounts
    duration_seconds: float
    cost: Cost
    vendors: list[VendorStatus]
    failed_sample: list[FailedItem]
    shards: int
    restarts: dict[int, int] = field(default_factory=dict)
    resumed: int = 0  # items already final when this invocation started (a resumed run)

    def to_json(self) -> dict[str, object]:
        return {
            "run": self.run,
            "phase": self.phase.value,
            "reason": self.reason,
            "message": self.message,
            "items": self.items.to_wire(),
            "durationSeconds": round(self.duration_seconds, 3),
            "throughput": {
                "itemsPerSecond": round(
                    (self.items.total - self.items.remaining - self.resumed)
                    / self.duration_seconds,
                    1,
                )
                if self.duration_seconds > 0
                else 0.0
            },
            "cost": self.cost.to_wire(),
            "vendors": [v.to_wire() for v in self.vendors],
            "failedItems": {
                "count": self.items.failed,
                "sample": [f.to_wire() for f in self.failed_sample],
            },
            "shards": self.shards,
            "restarts": {str(k): v for k, v in self.restarts.items() if v},
            "resumed": self.resumed,
        }

    def json_line(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))


def exit_code_for(phase: Phase) -> ExitCode:
    return {
        Phase.SUCCEEDED: ExitCode.OK,
        Phase.PARTIALLY_SUCCEEDED: ExitCode.PARTIAL,
    }.get(phase, ExitCode.FAILED)
