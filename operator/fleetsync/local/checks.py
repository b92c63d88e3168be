"""What ``fleetsync validate`` and ``fleetsync dead-letters`` compute beyond the CLI's wiring:
the templates checked against the inventory's first items, where a manifest without a sink
writes, and dead letters grouped by cause."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fleetsync.api.progress import cause_of
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec
from fleetsync.errors import ManifestError

__all__ = ["cause_groups", "check_templates", "default_sink"]


def default_sink(spec: SyncJobSpec, base_dir: Path) -> str:
    """Where a manifest without ``spec.sink`` writes (the embedded default, kept so a first
    manifest runs as written; the run says so too)."""
    sqlite = spec.resolved_sink.sqlite
    assert sqlite is not None
    return f"data goes to SQLite {base_dir / sqlite.path}, table {sqlite.table}"


async def check_templates(spec: SyncJobSpec, base_dir: Path) -> bool:
    """ManifestError for a template naming a field none of the inventory's first items has;
    False when the inventory cannot be read here (HTTP, a ConfigMap)."""
    # Imported here: `validate` of a manifest that fails its schema loads no HTTP client.
    from fleetsync.worker.inventory import first_items
    from fleetsync.worker.requests import template_problems

    inventory = spec.fleet.inventory
    if inventory.inline is None and inventory.generate is None and inventory.file is None:
        return False
    items = await first_items(inventory, key=spec.fleet.key, base_dir=base_dir)
    problems = template_problems(spec, items) if items else []
    if problems:
        raise ManifestError(problems, hint="use a field the inventory's items have")
    return True


def cause_groups(letters: list[tuple[str, str]]) -> list[str]:
    """``fleetsync dead-letters --group``: a header, then "count x cause", most frequent first,
    each with one (key, reason) as an example."""
    lines: list[str] = []
    counts: Counter[str] = Counter()
    example: dict[str, tuple[str, str]] = {}
    for key, reason in letters:
        cause = cause_of(reason)
        counts[cause] += 1
        example.setdefault(cause, (key, reason))
    lines.append(f"{len(letters)} dead letters, {len(counts)} causes")
    for cause, n in sorted(counts.items(), key=lambda c: (-c[1], c[0])):
        key, reason = example[cause]
        lines.append(f"{n:>8} \N{MULTIPLICATION SIGN} {cause}")
        if reason != cause:
            lines.append(f"{'':>10} e.g. {key}: {reason}")
    return lines
