"""A finished (or failed) local run as the same fields the SyncJob status carries.

``fleetsync run --output json`` prints :func:`summary_json` as its last stdout line, so
scripts read ``phase``, ``items``, ``durationSeconds``, ``cost``, ``vendors`` and
``failedItems`` exactly as they would from ``kubectl get sj -o json``.

The text summary groups failures by cause (:meth:`RunSummary.failure_lines`): a thousand
dead letters with one cause are one line with a count, not a list of keys. The counts are the
exact per-cause counts the shards report (``causes``, :func:`fleetsync.api.progress.cause_of`),
each shown with one whole reason from the sample (its body excerpt, its address); without
them (an older coordinator) they come from the sample, and the text says so.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from fleetsync.api.constants import ExitCode, Phase
from fleetsync.api.progress import cause_of
from fleetsync.api.v1alpha1.status import Cost, FailedItem, FailureCause, ItemCounts, VendorStatus

__all__ = ["TIMES", "RunSummary", "exit_code_for", "failure_causes"]

TIMES = "\N{MULTIPLICATION SIGN}"  # between a count and its cause

_CAUSE_LINES = 8


def failure_causes(sample: Sequence[FailedItem]) -> list[tuple[int, str]]:
    """The sample's reasons with their counts, most frequent first (then by reason)."""
    counts = Counter(failed.reason for failed in sample)
    return sorted(((n, reason) for reason, n in counts.items()), key=lambda c: (-c[0], c[1]))


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
    causes: list[FailureCause] | None = None  # every failure by cause (exact), if known

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
                "causes": [c.to_wire() for c in self.causes or []],
            },
            "shards": self.shards,
            "restarts": {str(k): v for k, v in self.restarts.items() if v},
            "resumed": self.resumed,
        }

    def failure_lines(self) -> list[str]:
        """Text lines for the failures: a count and the reason per cause, e.g.
        500 items with ``sungrow: HTTP 503 (vendor down past maxOutageSeconds 300s)``."""
        failed, sample = self.items.failed, self.failed_sample
        if not failed:
            return []
        if self.causes:
            examples = {cause_of(f.reason): f.reason for f in reversed(sample)}
            causes = [(c.count, c.cause) for c in self.causes]
            lines = [f"failed {failed}, by cause:"]
            for n, cause in causes[:_CAUSE_LINES]:
                example = examples.get(cause)
                lines.append(f"  {n} {TIMES} {cause}")
                if example is not None and example != cause:
                    lines.append(f"      e.g. {example}")
        else:
            causes = failure_causes(sample)
            if len(sample) >= failed:
                lines = [f"failed {failed}, by cause:"]
            else:
                lines = [f"failed {failed}; causes in a sample of {len(sample)}:"]
            lines += [f"  {n} {TIMES} {reason}" for n, reason in causes[:_CAUSE_LINES]]
        if len(causes) > _CAUSE_LINES:
            lines.append(f"  … {len(causes) - _CAUSE_LINES} more causes")
        return lines

    def json_line(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))


def exit_code_for(phase: Phase) -> ExitCode:
    return {
        Phase.SUCCEEDED: ExitCode.OK,
        Phase.PARTIALLY_SUCCEEDED: ExitCode.PARTIAL,
    }.get(phase, ExitCode.FAILED)
