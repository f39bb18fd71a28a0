"""When a schedule fires: ``next_occurrences(schedule, after, count=, until=)``, pure and DST-correct.

1. ``next_occurrences(schedule, after, count=, until=)`` is pure: the first ``count`` times strictly
   after ``after`` (and not after ``until``), as aware UTC datetimes, sorted, each once.
2. Wall-clock schedules — cron, rrule, and intervals of a whole number of days — are computed in the
   schedule's time zone as local (naive) times and then placed on the UTC timeline, so a 09:00 cron stays
   at 09:00 local across a DST change. Intervals that are not whole days are elapsed time: UTC arithmetic
   from the anchor.
3. Local times that do not exist or exist twice are resolved deterministically:
   - a time in a spring-forward gap (02:30 in Berlin on the last Sunday of March) happens at the first
     instant after the gap (03:00 local), once even when several times of the gap map there;
   - a time in the repeated fall-back hour happens once, at its first occurrence (summer time), unless
     the schedule does not fix the hour (a cron hour field starting with ``*``, an HOURLY/MINUTELY/
     SECONDLY rrule without BYHOUR): such a schedule counts real time and fires in both (as Debian cron
     does for its "wildcard" jobs).
4. Anchors are fixed (``schedules`` note 2), so every process computes the same phase, whatever
   ``after`` it starts from. An interval schedule has no times before its anchor.
5. Bounded work: a WEEKLY or finer rrule is fast-forwarded to ``after`` by whole periods (same result,
   no iteration from 2020); times more than ``SEARCH_HORIZON`` (10 years) after ``after`` are not looked
   for, and an HOURLY or finer rrule (which dateutil steps through period by period) only
   ``FINE_PERIODS`` periods ahead. Only when a DST change lies within ``DST_MARGIN`` (3 h) of the
   search's start or end does the search start earlier and end later, by the size of the change, so
   what the change reorders is still found.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter
from dateutil.rrule import rrule

from tripwire.orchestration.schedules import (
    DEFAULT_ANCHOR,
    CronSchedule,
    IntervalSchedule,
    RRuleSchedule,
)

__all__ = ["DST_MARGIN", "FINE_PERIODS", "SEARCH_HORIZON", "next_occurrences"]

DST_MARGIN = timedelta(hours=3)
SEARCH_HORIZON = timedelta(days=3653)
MAX_CANDIDATES = 100_000
FINE_PERIODS = 200_000
"""An HOURLY/MINUTELY/SECONDLY rrule is searched this many periods ahead at most (note 5)."""
_FAST_FORWARD = {
    "WEEKLY": timedelta(weeks=1),
    "DAILY": timedelta(days=1),
    "HOURLY": timedelta(hours=1),
    "MINUTELY": timedelta(minutes=1),
    "SECONDLY": timedelta(seconds=1),
}
_FREQ_NAMES = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY")


def next_occurrences(
    schedule: CronSchedule | IntervalSchedule | RRuleSchedule,
    after: datetime,
    *,
    count: int,
    until: datetime | None = None,
) -> list[datetime]:
    """The first ``count`` times strictly after ``after`` and not after ``until``, aware UTC, sorted."""
    if after.tzinfo is None or (until is not None and until.tzinfo is None):
        raise ValueError("after and until must be timezone-aware datetimes")
    after = after.astimezone(UTC)
    until = None if until is None else until.astimezone(UTC)
    if count <= 0 or (until is not None and until <= after):
        return []
    if isinstance(schedule, IntervalSchedule) and not schedule.whole_days:
        return _elapsed(schedule, after, count, until)
    zone = schedule.zone
    start_wall = _wall(after, zone) - _margin(zone, after)
    walls: Callable[[datetime], Iterator[datetime]]
    if isinstance(schedule, CronSchedule):
        walls, both = _cron_walls(schedule.cron), schedule.both_folds
    elif isinstance(schedule, IntervalSchedule):
        walls, both = _day_walls(schedule.anchor_wall(), schedule.interval), False
    else:
        walls, both = _rrule_walls(schedule.parsed()), schedule.both_folds
    return _collect(walls(start_wall), zone, both, after, count, until)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _margin(zone: ZoneInfo, instant: datetime) -> timedelta:
    """How far a DST change near ``instant`` (within ``DST_MARGIN``) can reorder local times: its size."""
    before = (instant - DST_MARGIN).astimezone(zone).utcoffset() or timedelta(0)
    later = (instant + DST_MARGIN).astimezone(zone).utcoffset() or timedelta(0)
    return abs(later - before)


def _collect(
    walls: Iterator[datetime],
    zone: ZoneInfo,
    both_folds: bool,
    after: datetime,
    count: int,
    until: datetime | None,
) -> list[datetime]:
    found: set[datetime] = set()
    stop_wall = None if until is None else _wall(until, zone) + _margin(zone, until)
    horizon_wall = _wall(after + SEARCH_HORIZON, zone)
    counted = False
    for seen, wall in enumerate(walls):
        if seen >= MAX_CANDIDATES or wall > horizon_wall or (stop_wall is not None and wall > stop_wall):
            break
        for instant in _instants(wall, zone, both_folds=both_folds):
            if instant > after and (until is None or instant <= until):
                found.add(instant)
        if not counted and len(found) >= count:
            # Later local times can only come earlier on the timeline near a DST change (note 6).
            counted, last = True, max(found)
            stop = _wall(last, zone) + _margin(zone, last)
            stop_wall = stop if stop_wall is None else min(stop_wall, stop)
    return sorted(found)[:count]


def _instants(wall: datetime, zone: ZoneInfo, *, both_folds: bool) -> tuple[datetime, ...]:
    """The UTC instants of a local time (note 4): one, the end of a gap, or one/two in a repeated hour."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    if first < second:  # the repeated hour: summer time first
        return (first, second) if both_folds else (first,)
    return (_gap_end(second, first, zone),)  # a gap: the offset before it puts `first` after it


def _gap_end(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The transition instant in ``(low, high]``: the first whole second with ``high``'s offset."""
    offset = high.astimezone(zone).utcoffset()
    lo, hi = math.floor(low.timestamp()), math.ceil(high.timestamp())
    while hi - lo > 1:
        middle = (lo + hi) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == offset:
            hi = middle
        else:
            lo = middle
    return datetime.fromtimestamp(hi, UTC)


def _elapsed(
    schedule: IntervalSchedule, after: datetime, count: int, until: datetime | None
) -> list[datetime]:
    anchor, step = _anchor_utc(schedule), schedule.interval
    first = max(0, (after - anchor) // step + 1)
    out = []
    for k in range(first, first + count):
        instant = anchor + k * step
        if until is not None and instant > until:
            break
        out.append(instant)
    return out


def _cron_walls(expression: str) -> Callable[[datetime], Iterator[datetime]]:
    def walls(start: datetime) -> Iterator[datetime]:
        # croniter's next is strictly after its start: start one microsecond early to include `start`.
        it = croniter(expression, start - timedelta(microseconds=1))
        while True:
            try:
                yield it.get_next(datetime)
            except CroniterBadDateError:
                return

    return walls


def _day_walls(anchor: datetime, step: timedelta) -> Callable[[datetime], Iterator[datetime]]:
    def walls(start: datetime) -> Iterator[datetime]:
        k = max(0, -((anchor - start) // step))  # the first k with anchor + k * step >= start
        while True:
            yield anchor + k * step
            k += 1

    return walls


def _rrule_walls(rule: rrule) -> Callable[[datetime], Iterator[datetime]]:
    def walls(start: datetime) -> Iterator[datetime]:
        freq, interval = _rrule_parts_of(rule)
        dtstart = _rrule_start(rule)
        unit = _FAST_FORWARD.get(freq)
        current = rule
        if unit is not None and start > dtstart:  # note 5: skip whole periods, same phase
            period = unit * interval
            skip = (start - dtstart) // period - 1
            if skip > 0:
                current = rule.replace(dtstart=dtstart + skip * period)
        horizon = SEARCH_HORIZON
        if unit is not None and unit <= timedelta(hours=1):  # dateutil steps through every period
            horizon = min(horizon, unit * interval * FINE_PERIODS)
        yield from _bounded(current, start + horizon).xafter(start, inc=True)

    return walls


def _rrule_parts_of(rule: rrule) -> tuple[str, int]:
    return _FREQ_NAMES[rule._freq], int(rule._interval)  # type: ignore[attr-defined]


def _anchor_utc(schedule: IntervalSchedule) -> datetime:
    anchor = schedule.anchor_date or DEFAULT_ANCHOR
    if anchor.tzinfo is not None:
        return anchor.astimezone(UTC)
    return _instants(anchor, schedule.zone, both_folds=False)[0]


def _rrule_start(rule: rrule) -> datetime:
    return rule._dtstart  # type: ignore[attr-defined,no-any-return]


def _bounded(rule: rrule, horizon: datetime) -> rrule:
    until = rule._until  # type: ignore[attr-defined]
    return rule.replace(until=horizon if until is None else min(until, horizon))
