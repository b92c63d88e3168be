"""SyncSchedule: when is a run due — CronJob's semantics plus an active window.

Pure functions of the spec, the last scheduled time and "now" (injected), so tests need
not wait for minutes. Like CronJob, a controller that was down does not replay every missed
tick: only the most recent one is considered, and only if ``startingDeadlineSeconds`` has
not passed. Ticks outside ``activeWindow`` are skipped and counted, never queued.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

from croniter import croniter

from fleetsync.api.v1alpha1.syncschedule import ActiveWindow, SyncScheduleSpec

__all__ = ["Tick", "due_tick", "in_window", "next_tick", "run_name", "run_now_name"]

# CronJob's own bound: past this many missed ticks it stops counting them one by one.
MAX_MISSED = 100


@dataclass(frozen=True, slots=True)
class Tick:
    """The latest tick since the last run, and what to do with it."""

    time: float  # epoch seconds
    missed: int  # earlier ticks skipped because the controller was not there
    too_late: bool  # past startingDeadlineSeconds
    in_window: bool


def _parse_hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def in_window(window: ActiveWindow | None, at: datetime) -> bool:
    """``at`` (aware, in the schedule's zone) inside [start, end); end < start spans midnight."""
    if window is None:
        return True
    start, end = _parse_hhmm(window.start), _parse_hhmm(window.end)
    now = at.time().replace(second=0, microsecond=0)
    if start < end:
        return start <= now < end
    return now >= start or now < end


def next_tick(spec: SyncScheduleSpec, after: float) -> float:
    zone = ZoneInfo(spec.time_zone)
    base = datetime.fromtimestamp(after, zone)
    return float(croniter(spec.schedule, base).get_next(float))


def due_tick(spec: SyncScheduleSpec, last: float, now: float) -> Tick | None:
    """The most recent tick in (last, now], or None when none is due."""
    zone = ZoneInfo(spec.time_zone)
    it = croniter(spec.schedule, datetime.fromtimestamp(last, zone))
    latest: float | None = None
    missed = 0
    for _ in range(MAX_MISSED + 1):
        candidate = float(it.get_next(float))
        if candidate > now:
            break
        if latest is not None:
            missed += 1
        latest = candidate
    else:
        # More than MAX_MISSED ticks behind: jump to the newest tick, as CronJob does.
        latest = float(croniter(spec.schedule, datetime.fromtimestamp(now, zone)).get_prev(float))
        missed = MAX_MISSED
    if latest is None:
        return None
    deadline = spec.starting_deadline_seconds
    return Tick(
        time=latest,
        missed=missed,
        too_late=deadline is not None and now - latest > deadline,
        in_window=in_window(spec.active_window, datetime.fromtimestamp(latest, zone)),
    )


def run_name(schedule: str, tick: float) -> str:
    """Fixed per tick (minutes since the epoch, like CronJob): a retried create cannot
    start a second run for the same tick."""
    return f"{schedule[:40]}-{int(tick // 60)}"


def run_now_name(schedule: str, request: str) -> str:
    """Fixed per ``fleetsync.dev/run-now`` value: one run per new value, however often seen."""
    digest = hashlib.sha256(request.encode()).hexdigest()[:8]
    return f"{schedule[:40]}-now-{digest}"
