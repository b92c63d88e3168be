"""SyncSchedule: when is a run due — CronJob's semantics plus an active window.

Pure functions of the spec, the last scheduled time and "now" (injected), so tests need
not wait for minutes. As CronJob's controller (``mostRecentScheduleTime`` in
kubernetes/kubernetes ``pkg/controller/cronjob/utils.go``):

- a controller that was away does not replay missed ticks: only the latest tick ≤ now runs,
  found exactly however long it was away;
- with ``startingDeadlineSeconds``, ticks older than ``now - deadline`` are not considered,
  and missed ticks are counted only inside that window (at most ``MAX_MISSED``).

Daylight-saving time in the schedule's zone: the cron expression is matched against wall
clock times, each mapped to the first instant that shows it. A tick in a repeated hour
(autumn) therefore runs once — CronJob runs it twice (kubernetes/kubernetes#121594). A tick
whose wall time does not exist (spring) does not run that day, as in CronJob (robfig/cron:
"2am nightly job (skipped)"): the next run is the next wall time that exists.

A schedule that matches no date (``59 23 31 2 *``) raises ``NeverFires`` instead of a
croniter error. Ticks outside ``activeWindow`` are skipped and counted, never queued.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from fleetsync.api.v1alpha1.syncschedule import ActiveWindow, SyncScheduleSpec

__all__ = [
    "MAX_MISSED",
    "NeverFires",
    "Tick",
    "due_tick",
    "in_window",
    "next_tick",
    "run_name",
    "run_now_name",
]

# CronJob's own bound: past this many missed ticks it stops counting them one by one.
MAX_MISSED = 100
# Wall clocks move back by at most this much at a transition (Antarctica/Troll: 2 h).
_DST_SLACK = timedelta(hours=2, minutes=1)
_SEARCH_LIMIT = 10_000  # candidate wall times examined per search, a bound not a policy


class NeverFires(ValueError):
    """The cron expression matches no date, e.g. ``59 23 31 2 *``."""

    def __init__(self, schedule: str) -> None:
        super().__init__(f"spec.schedule: {schedule!r} matches no date: it never fires")


@dataclass(frozen=True, slots=True)
class Tick:
    """The latest tick ≤ now that is due, and what to do with it."""

    time: float  # epoch seconds
    missed: int  # earlier due ticks not run (inside the starting deadline window)
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


def _wall(epoch: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(epoch, zone).replace(tzinfo=None)


def _instant(wall: datetime, zone: ZoneInfo) -> float | None:
    """The first instant showing ``wall`` in ``zone``; None if the clock skipped it."""
    epoch = wall.replace(tzinfo=zone, fold=0).timestamp()
    return epoch if _wall(epoch, zone) == wall else None


def _walls(spec: SyncScheduleSpec, start: datetime, *, forward: bool) -> Iterator[datetime]:
    it = croniter(spec.schedule, start)
    try:
        for _ in range(_SEARCH_LIMIT):
            yield it.get_next(datetime) if forward else it.get_prev(datetime)
    except CroniterBadDateError:
        raise NeverFires(spec.schedule) from None


def _ticks_after(spec: SyncScheduleSpec, after: float) -> Iterator[float]:
    """Tick instants > ``after``, ascending."""
    zone = ZoneInfo(spec.time_zone)
    for wall in _walls(spec, _wall(after, zone), forward=True):
        epoch = _instant(wall, zone)
        if epoch is not None and epoch > after:
            yield epoch


def _latest(spec: SyncScheduleSpec, now: float) -> float | None:
    """The latest tick ≤ ``now``. In the second pass of a repeated hour, wall times up to
    the DST slack ahead of now's first showed before now: the search starts past them."""
    zone = ZoneInfo(spec.time_zone)
    local = datetime.fromtimestamp(now, zone)
    ahead = _DST_SLACK if local.fold else timedelta(minutes=1)
    for wall in _walls(spec, local.replace(tzinfo=None) + ahead, forward=False):
        epoch = _instant(wall, zone)
        if epoch is not None and epoch <= now:
            return epoch
    return None


def next_tick(spec: SyncScheduleSpec, after: float) -> float:
    """The first tick after ``after``; raises ``NeverFires``."""
    for epoch in _ticks_after(spec, after):
        return epoch
    raise NeverFires(spec.schedule)


def due_tick(spec: SyncScheduleSpec, last: float, now: float) -> Tick | None:
    """The latest tick in (earliest, now], or None; earliest is ``last`` or, with a starting
    deadline, ``now - deadline`` if later. Raises ``NeverFires``."""
    earliest = last
    if spec.starting_deadline_seconds is not None:
        earliest = max(earliest, now - spec.starting_deadline_seconds)
    latest = _latest(spec, now)
    if latest is None or latest <= earliest:
        return None
    missed = 0
    for epoch in _ticks_after(spec, earliest):
        if epoch >= latest or missed >= MAX_MISSED:
            break
        missed += 1
    zone = ZoneInfo(spec.time_zone)
    return Tick(
        time=latest,
        missed=missed,
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
