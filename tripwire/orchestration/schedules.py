"""Schedules of a deployment: cron, interval and rrule, each in a time zone, each active or paused.

    schedules:
      - cron: "0 9 * * 1-5"            # 09:00 Berlin time on weekdays, summer and winter
        timezone: Europe/Berlin
      - interval: PT6H                  # or 21600 (seconds); from anchor_date
        anchor_date: "2026-01-01T03:00:00"
      - rrule: "FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=7;BYMINUTE=30"
        active: false                   # paused: creates no runs until resumed

1. Which kind a schedule is comes from the key it has (``cron``, ``interval`` or ``rrule``, exactly one);
   unknown fields are refused, and every value is checked when the deployment is saved, with a message
   naming the field: the cron expression (croniter; also that it ever matches a date), the IANA time
   zone, the interval (seconds or an ISO-8601 duration, at least one second, no months or years), the
   rrule (dateutil). Random cron fields (``R``) are refused: several schedulers must compute the same
   times (runs are keyed by them).
2. The anchors: an interval without ``anchor_date``, and an rrule without DTSTART, start at
   2020-01-01 00:00 local time (``DEFAULT_ANCHOR``), so every process computes the same phase; a naive
   ``anchor_date`` / DTSTART is local time of ``timezone``.
3. rrules: one RRULE with an optional DTSTART (no RDATE/EXDATE/EXRULE), no COUNT (use UNTIL).

The times a schedule produces, DST included, are computed by ``occurrences.next_occurrences``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from dateutil.rrule import YEARLY, rrule, rrulestr
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_serializer,
    field_validator,
)

__all__ = [
    "DEFAULT_ANCHOR",
    "CronSchedule",
    "IntervalSchedule",
    "RRuleSchedule",
    "Schedule",
    "schedule_kind",
    "schedule_summary",
]

DEFAULT_ANCHOR = datetime(2020, 1, 1)
"""Local start of intervals without ``anchor_date`` and rrules without DTSTART (note 2)."""
_KINDS = ("cron", "interval", "rrule")
_ONE_RRULE = "give one RRULE line, optionally after one DTSTART line (no RDATE, EXDATE or EXRULE)"


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    if name == "localtime":  # whatever this machine is set to: not the same on every host
        raise ValueError("'localtime' depends on the machine; use an IANA name like 'Europe/Berlin' or 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name like 'Europe/Berlin', 'America/New_York' or 'UTC'"
        ) from None


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = Field(
        "UTC", description="IANA time zone the schedule's local times are in (e.g. 'Europe/Berlin')"
    )
    active: bool = Field(True, description="false: paused, the scheduler creates no runs from it")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        _zone(value)
        return value

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)


class CronSchedule(_Base):
    """A cron expression (5 fields, or 6 with seconds last; ``@hourly``, ``L``, ``5#3``...) in a time zone."""

    cron: str = Field(description="cron expression, e.g. '0 9 * * 1-5'")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        text = " ".join(value.split())
        if not croniter.is_valid(text):
            raise ValueError(
                f"{value!r} is not a valid cron expression: give minute hour day-of-month month day-of-week, "
                "e.g. '0 9 * * 1-5'"
            )
        if any(item.strip().upper().startswith("R") for f in text.split() for item in f.split(",")):
            raise ValueError(f"{value!r}: random fields (R) are not supported; give fixed values")
        try:
            croniter(text, DEFAULT_ANCHOR).get_next(datetime)
        except CroniterBadDateError:
            raise ValueError(f"{value!r} never matches a date (e.g. February 30)") from None
        return text

    @property
    def both_folds(self) -> bool:
        """Whether the hour is free: the repeated fall-back hour then fires twice (``occurrences`` note 3)."""
        return croniter(self.cron).expressions[1].startswith("*")


class IntervalSchedule(_Base):
    """Every ``interval`` from ``anchor_date``; whole days keep the local time of day (``occurrences``)."""

    interval: timedelta = Field(description="seconds, or an ISO-8601 duration like 'PT1H' or 'P1D'")
    anchor_date: datetime | None = Field(
        None, description="the first time; naive means local time of `timezone` (default 2020-01-01 00:00)"
    )

    @field_validator("interval", mode="wrap")
    @classmethod
    def _valid_interval(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> timedelta:
        problem = f"{value!r} is not an interval: give seconds (a number) or an ISO-8601 duration like 'PT1H'"
        if isinstance(value, bool):
            raise ValueError(problem)
        if isinstance(value, str) and re.match(r"^\s*-?P[^T]*[YM]", value.upper()):
            raise ValueError(f"{value!r}: months and years have no fixed length; use a cron or an rrule")
        try:
            parsed: timedelta = handler(value)
        except ValidationError:
            raise ValueError(problem) from None
        if parsed < timedelta(seconds=1):
            raise ValueError(f"{value!r}: an interval must be at least 1 second")
        return parsed

    @field_serializer("interval")
    def _seconds(self, value: timedelta) -> int | float:
        seconds = value.total_seconds()
        return int(seconds) if seconds.is_integer() else seconds

    @property
    def whole_days(self) -> bool:
        return self.interval % timedelta(days=1) == timedelta(0)

    def anchor_wall(self) -> datetime:
        """The anchor as local (naive) time of the schedule's zone."""
        anchor = self.anchor_date or DEFAULT_ANCHOR
        if anchor.tzinfo is None:
            return anchor
        return anchor.astimezone(self.zone).replace(tzinfo=None)


_FINE = ("HOURLY", "MINUTELY", "SECONDLY")


class RRuleSchedule(_Base):
    """An RFC 5545 recurrence rule (one RRULE, optional local DTSTART), evaluated in local time."""

    rrule: str = Field(description="e.g. 'FREQ=WEEKLY;BYDAY=MO;BYHOUR=9' or 'DTSTART:...\\nRRULE:...'")

    @field_validator("rrule")
    @classmethod
    def _valid_rrule(cls, value: str) -> str:
        text = value.strip()
        if "COUNT" in _rrule_parts(text):  # _rrule_parts raises ValueError with a message
            raise ValueError("COUNT is not supported: end the schedule with UNTIL instead")
        rule = _parse_rrule(text)
        # Whether any day matches is what can fail. dateutil looks for a match up to the year 9999 whatever
        # UNTIL says, so ask year by year (at most ~0.2 s) with the rule's own day filters.
        if next(iter(rule.replace(freq=YEARLY, interval=1, until=None)), None) is None:
            raise ValueError(f"{value!r} never matches a date")
        return text

    @property
    def both_folds(self) -> bool:
        parts = _rrule_parts(self.rrule)
        return parts.get("FREQ") in _FINE and "BYHOUR" not in parts

    def parsed(self) -> rrule:
        return _parse_rrule(self.rrule)


def _rrule_parts(text: str) -> dict[str, str]:
    """The fields of the RRULE line, upper-cased keys; ValueError for more than DTSTART + one RRULE."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    rules = [line for line in lines if not line.upper().startswith("DTSTART")]
    if len(rules) != 1 or len(lines) - len(rules) > 1:
        raise ValueError(_ONE_RRULE)
    line = rules[0]
    if ":" in line:
        name, _, line = line.partition(":")
        if name.strip().upper() != "RRULE":
            raise ValueError(f"{name.strip()!r} lines are not supported: give DTSTART and one RRULE")
    parts: dict[str, str] = {}
    for item in line.split(";"):
        key, sep, val = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not NAME=VALUE (e.g. FREQ=DAILY;BYHOUR=9)")
        parts[key.strip().upper()] = val.strip().upper()
    if "FREQ" not in parts:
        raise ValueError("FREQ is missing (e.g. FREQ=DAILY;BYHOUR=9)")
    return parts


@lru_cache(maxsize=256)
def _parse_rrule(text: str) -> rrule:
    try:
        rule = rrulestr(text, dtstart=DEFAULT_ANCHOR)
    except ValueError as exc:
        message = str(exc)
        if "UNTIL" in message and "UTC" in message:
            message = "UNTIL must be a local time without Z (the schedule's timezone applies)"
        raise ValueError(f"not a valid rrule: {message}") from None
    except (TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"not a valid rrule: {exc}") from None
    if not isinstance(rule, rrule):
        raise ValueError(_ONE_RRULE)
    if rule._dtstart.tzinfo is not None:  # type: ignore[attr-defined]
        raise ValueError("DTSTART must be a local time like 20260101T090000 (no TZID, no Z): set `timezone`")
    return rule


def schedule_kind(value: Any) -> str | None:
    """The union tag of a schedule document or model: which of cron/interval/rrule it has (exactly one)."""
    if isinstance(value, _Base):
        return next(kind for kind in _KINDS if hasattr(value, kind)) + "-schedule"
    if not isinstance(value, dict):
        return None
    present = [kind for kind in _KINDS if kind in value]
    return f"{present[0]}-schedule" if len(present) == 1 else None


Schedule = Annotated[
    Annotated[CronSchedule, Tag("cron-schedule")]
    | Annotated[IntervalSchedule, Tag("interval-schedule")]
    | Annotated[RRuleSchedule, Tag("rrule-schedule")],
    Discriminator(
        schedule_kind,
        custom_error_type="schedule_kind",
        custom_error_message="a schedule is an object with exactly one of 'cron', 'interval' or 'rrule'",
    ),
]
"""One schedule; its kind is the key it has (note 1). Tags are not field names, so error paths stay
``schedules[0].timezone``."""


def schedule_summary(schedule: CronSchedule | IntervalSchedule | RRuleSchedule) -> str:
    """One line: ``cron 0 9 * * * (Europe/Berlin)``, ``every 1h``, ``rrule FREQ=DAILY``."""
    zone = "" if schedule.timezone == "UTC" else f" ({schedule.timezone})"
    if isinstance(schedule, CronSchedule):
        return f"cron {schedule.cron}{zone}"
    if isinstance(schedule, IntervalSchedule):
        seconds = schedule.interval.total_seconds()
        every = next(
            (f"{seconds / size:g}{unit}" for unit, size in (("d", 86400), ("h", 3600), ("m", 60))
             if seconds >= size and seconds % size == 0),
            f"{seconds:g}s",
        )  # fmt: skip
        return f"every {every}{zone}"
    return f"rrule {' '.join(schedule.rrule.split())}{zone}"
