"""What of a run's progress the controller keeps, cut to fit Kubernetes' object limits.

A restarted controller rebuilds every run from what this module writes, so it must keep
each shard's checkpoint, pod and counts exactly. But a ConfigMap holds at most 1 MiB (etcd
refuses a request over 1.5 MiB), and one report may name 256 vendors: 1,000 shards of the
old single ConfigMap made 2 MB, and final reports then got 503 (issue 14, item 9). So:

- **Nothing recomputable is kept.** A report's own ``checkpoint`` (the shard's stored
  checkpoint is kept beside it) and its ``wants`` and ``backlog`` (read once, at intake) are
  dropped; of the failed-item samples only those the status shows (the first
  ``FAILED_SAMPLE_MAX`` in pod order) are kept; long texts are clipped (at intake already,
  :func:`clip_report`).
- **A shard's entry has a budget** (``SHARD_BYTES``). Over it, a finished shard's vendor
  counters and cost are folded into the run's ``retired`` totals (exact: that pod reports no
  more), and a live shard keeps its busiest vendors that fit. What a live shard loses comes
  back with its next report, a second later; only if its pod is replaced before that are
  the dropped vendors' call counts missing from status. Runs of a few vendors never get
  near the budget and are kept whole.
- **Shards are kept in parts** of ``SHARDS_PER_PART``: part 0 in the ConfigMap
  ``<run>-progress`` with the run-wide totals and the number of parts, part ``i`` in
  ``<run>-progress-<i>``. A shard always lives in the same part, and parts are written
  before part 0: whatever write is interrupted, each shard's entry is whole (one of its
  snapshots), so a restart resumes every shard; run-wide totals of retired pods may lag.
  At the schema's maximum (1,000 shards) that is ten ConfigMaps of at most ~0.85 MiB
  (``tests/unit/test_progress_size.py`` builds the worst case).

The stored shape is :meth:`RunProgress.snapshot`'s, so :meth:`RunProgress.restore` reads
it back, and a ConfigMap written before parts existed (no ``parts``) still loads.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from fleetsync.api.constants import FAILED_SAMPLE_MAX
from fleetsync.api.progress import FINAL_STATES, ReportWire
from fleetsync.api.v1alpha1.source import MAX_VENDORS

__all__ = [
    "FORMAT",
    "REPLACED_KEPT",
    "SAMPLE_PER_SHARD",
    "SHARDS_PER_PART",
    "SHARD_BYTES",
    "TEXT_CHARS",
    "clip_report",
    "compact",
    "join_parts",
    "part_count",
    "split_parts",
]

FORMAT = 2
SHARDS_PER_PART = 100
# A shard's view, checkpoint and replaced pods together: 100 shards of at most this, plus
# the run-wide totals (256 vendors' counters) keep part 0 under ~0.85 MiB of the 1 MiB.
SHARD_BYTES = 8_000
TEXT_CHARS = 1_024  # a failed item's key and reason, a shard's error
# Failed items kept per report: what RunProgress.snapshot keeps per shard, so the status's
# sample is the same before and after a restart.
SAMPLE_PER_SHARD = 5
REPLACED_KEPT = 16  # replaced pods remembered per shard (a zombie saying hello again)
_SECTIONS = ("views", "checkpoints", "replaced")


def _clip(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"


def clip_report(report: ReportWire) -> ReportWire:
    """A report as the controller keeps it: texts clipped to ``TEXT_CHARS``, at most
    ``SAMPLE_PER_SHARD`` failed items and ``MAX_VENDORS`` vendors (a run serves no more).
    Bounds status and stored progress whatever a worker sends."""
    clipped = ReportWire(**report)
    clipped["failedSample"] = [
        {**f, "key": _clip(f["key"]), "reason": _clip(f["reason"])}
        for f in report["failedSample"][:SAMPLE_PER_SHARD]
    ]
    clipped["vendors"] = report["vendors"][:MAX_VENDORS]
    if "error" in report:
        clipped["error"] = _clip(report["error"])
    clipped.pop("errorDetail", None)  # for `fleetsync run`; status says `error`
    return clipped


def _size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def _samples_shown(views: Mapping[str, Any]) -> dict[str, int]:
    """How many failed items of each shard the status shows: the first ones in pod order."""
    left, shown = FAILED_SAMPLE_MAX, {}
    for shard, view in sorted(views.items(), key=lambda sv: str(sv[1]["pod"])):
        sample = view["report"]["failedSample"] if view["report"] else []
        shown[shard] = min(len(sample), left)
        left -= shown[shard]
    return shown


def _fold(report: dict[str, Any], retired: dict[str, Any]) -> None:
    """Move a finished shard's counters into the run's retired totals (it reports no more)."""
    cost = retired.setdefault("cost", {})
    for name, value in report["cost"].items():
        cost[name] = cost.get(name, 0) + value
    vendors = retired.setdefault("vendors", {})
    for vendor in report["vendors"]:
        counts = vendors.setdefault(vendor["name"], {})
        for name in ("calls", "errors", "throttled"):
            counts[name] = counts.get(name, 0) + vendor[name]
    report["cost"] = dict.fromkeys(report["cost"], 0)
    report["vendors"] = []


def _busiest_that_fit(vendors: list[Any], room: int) -> tuple[list[Any], bool]:
    """The busiest vendors whose JSON fits in ``room``, and whether all did. Measures no
    more than ``room`` bytes' worth: compacting costs at most the budget per shard."""
    kept: list[Any] = []
    for vendor in sorted(vendors, key=lambda v: v["calls"], reverse=True):
        room -= _size(vendor) + 1
        if room < 0:
            return kept, False
        kept.append(vendor)
    return kept, True


def _compact_view(view: Mapping[str, Any], shown: int, room: int, retired: dict[str, Any]) -> Any:
    """``view`` in at most ``room`` bytes (its vendors permitting: see the module docstring)."""
    if view["report"] is None:
        return dict(view)
    vendors = view["report"]["vendors"]
    report = {**view["report"], "checkpoint": None, "wants": {}, "vendors": []}
    report.pop("backlog", None)
    report["failedSample"] = report["failedSample"][:shown]
    out = {**view, "report": report}
    kept, whole = _busiest_that_fit(vendors, room - _size(out))
    if whole:
        report["vendors"] = vendors
    elif view["state"] in FINAL_STATES:  # exact: that pod reports no more
        report["vendors"] = vendors
        _fold(report, retired)
    else:  # a live shard's next report brings the others back
        report["vendors"] = kept
    return out


def compact(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """``snapshot`` (a :meth:`RunProgress.snapshot`) with every shard within its budget:
    its view, checkpoint and replaced pods together in at most ``SHARD_BYTES``."""
    retired = copy.deepcopy(dict(snapshot.get("retired", {})))
    views = snapshot.get("views", {})
    checkpoints = dict(snapshot.get("checkpoints", {}))
    replaced = {s: p[-REPLACED_KEPT:] for s, p in snapshot.get("replaced", {}).items()}
    shown = _samples_shown(views)
    compacted = {}
    for shard, view in views.items():
        room = SHARD_BYTES - _size(checkpoints.get(shard)) - _size(replaced.get(shard, []))
        compacted[shard] = _compact_view(view, shown[shard], room, retired)
    return {
        "views": compacted,
        "checkpoints": checkpoints,
        "replaced": replaced,
        "retired": retired,
    }


def split_parts(snapshot: Mapping[str, Any], shards: int) -> list[str]:
    """The JSON of each part, part 0 first (it holds the run-wide fields)."""
    stored = compact(snapshot)
    indices = [int(s) for section in _SECTIONS for s in stored[section]]
    count = math.ceil(max([shards, *(i + 1 for i in indices)]) / SHARDS_PER_PART) or 1
    parts: list[dict[str, Any]] = [{section: {} for section in _SECTIONS} for _ in range(count)]
    for section in _SECTIONS:
        for shard, value in stored[section].items():
            parts[int(shard) // SHARDS_PER_PART][section][shard] = value
    parts[0] |= {"format": FORMAT, "parts": count, "retired": stored["retired"]}
    return [json.dumps(part, separators=(",", ":")) for part in parts]


def part_count(head: Mapping[str, Any]) -> int:
    """How many parts a stored head says there are (1 for the single-ConfigMap format)."""
    parts = head.get("parts", 1)
    return parts if isinstance(parts, int) and parts >= 1 else 1


def join_parts(
    head: Mapping[str, Any], parts: Iterable[Mapping[str, Any] | None]
) -> dict[str, Any]:
    """One snapshot for :meth:`RunProgress.restore` from part 0 and the others (None: a part
    never written, its shards had not reported)."""
    joined: dict[str, Any] = {section: dict(head.get(section, {})) for section in _SECTIONS}
    joined["retired"] = head.get("retired", {})
    for part in parts:
        for section in _SECTIONS:
            joined[section].update((part or {}).get(section, {}))
    return joined
