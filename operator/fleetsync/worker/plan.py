"""Which shard this process is, and where its run's files are: the engine's fixed inputs.

Apart from :mod:`fleetsync.worker.engine` so the pure reporting code can read it without
importing the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fleetsync.coordination.timing import LeaseTiming

__all__ = ["ShardPlan"]


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """Which shard this process is, and where its run's files are."""

    run: str
    shard: int
    shards: int
    pod: str
    base_dir: Path
    config_map_dir: Path | None = None
    max_pending: int = 2000
    report_interval: float = 1.0
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    final_report_seconds: float = 20.0  # interrupted: within the pod's 30 s termination grace
    # A shard that finished is not being killed: it waits longer for a controller that is
    # restarting (a new pod can take a minute to be scheduled and start) so its final counts
    # reach the status. The Job cannot complete before, which is the point.
    done_report_seconds: float = 300.0
