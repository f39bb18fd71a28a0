"""Schedules: validation that names the field, and the times they produce (tables, DST included).

Expected times are worked out by hand. Europe/Berlin in 2026: CET (+01:00) until 2026-03-29 01:00Z,
when 02:00 local becomes 03:00; CEST (+02:00) until 2026-10-25 01:00Z, when 03:00 local becomes 02:00
again. America/New_York springs forward on 2026-03-08 at 07:00Z (02:00 EST -> 03:00 EDT).
Australia/Lord_Howe moves by 30 minutes: 2026-10-04 02:00 (+10:30) becomes 02:30 (+11:00) at 15:30Z.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter

from tripwire.errors import ValidationFailed
from tripwire.orchestration.deployments import parse_deployment
from tripwire.orchestration.occurrences import next_occurrences
from tripwire.orchestration.schedules import IntervalSchedule, Schedule, schedule_summary

SCHEDULE: TypeAdapter[Any] = TypeAdapter(Schedule)


def z(text: str) -> datetime:
    """``2026-03-29T01:00Z`` as an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


BERLIN = {"timezone": "Europe/Berlin"}


@pytest.mark.parametrize(
    ("schedule", "after", "count", "expected"),
    [
        pytest.param(
            {"cron": "0 9 * * *", **BERLIN}, "2026-03-27T00:00Z", 4,
            ["2026-03-27T08:00Z", "2026-03-28T08:00Z", "2026-03-29T07:00Z", "2026-03-30T07:00Z"],
            id="cron-09:00-berlin-stays-09:00-across-spring-forward",
        ),
        pytest.param(
            {"cron": "0 9 * * *", **BERLIN}, "2026-10-24T00:00Z", 3,
            ["2026-10-24T07:00Z", "2026-10-25T08:00Z", "2026-10-26T08:00Z"],
            id="cron-09:00-berlin-stays-09:00-across-fall-back",
        ),
        pytest.param(
            {"cron": "30 2 * * *", **BERLIN}, "2026-03-28T12:00Z", 2,
            ["2026-03-29T01:00Z", "2026-03-30T00:30Z"],
            id="cron-in-spring-gap-runs-at-the-end-of-the-gap",
        ),
        pytest.param(
            {"cron": "30 2 * * *", **BERLIN}, "2026-10-24T12:00Z", 2,
            ["2026-10-25T00:30Z", "2026-10-26T01:30Z"],
            id="cron-fixed-hour-in-repeated-hour-runs-once-first",
        ),
        pytest.param(
            {"cron": "0 * * * *", **BERLIN}, "2026-10-24T23:30Z", 4,
            ["2026-10-25T00:00Z", "2026-10-25T01:00Z", "2026-10-25T02:00Z", "2026-10-25T03:00Z"],
            id="cron-hourly-runs-every-real-hour-across-fall-back",
        ),
        pytest.param(
            {"cron": "0 * * * *", **BERLIN}, "2026-03-28T23:30Z", 4,
            ["2026-03-29T00:00Z", "2026-03-29T01:00Z", "2026-03-29T02:00Z", "2026-03-29T03:00Z"],
            id="cron-hourly-no-duplicate-across-spring-forward",
        ),
        pytest.param(
            {"cron": "*/30 * * * *", **BERLIN}, "2026-03-29T00:15Z", 4,
            ["2026-03-29T00:30Z", "2026-03-29T01:00Z", "2026-03-29T01:30Z", "2026-03-29T02:00Z"],
            id="cron-half-hourly-across-spring-forward",
        ),
        pytest.param(
            {"cron": "0 2 * * *", **BERLIN}, "2026-10-25T00:30Z", 1,
            ["2026-10-26T01:00Z"],
            id="cron-after-the-first-02:00-the-second-does-not-run",
        ),
        pytest.param(
            {"cron": "30 2 * * *", "timezone": "America/New_York"}, "2026-03-07T12:00Z", 3,
            ["2026-03-08T07:00Z", "2026-03-09T06:30Z", "2026-03-10T06:30Z"],
            id="cron-new-york-spring-gap",
        ),
        pytest.param(
            {"cron": "15 2 * * *", "timezone": "Australia/Lord_Howe"}, "2026-10-02T12:00Z", 3,
            ["2026-10-02T15:45Z", "2026-10-03T15:30Z", "2026-10-04T15:15Z"],
            id="cron-lord-howe-half-hour-gap",
        ),
        pytest.param(
            {"cron": "0 9 * * *"}, "2026-01-01T09:00Z", 2, ["2026-01-02T09:00Z", "2026-01-03T09:00Z"],
            id="cron-utc-strictly-after",
        ),
        pytest.param({"cron": "0 9 L * *"}, "2026-02-01T00:00Z", 1, ["2026-02-28T09:00Z"], id="cron-L"),
        pytest.param(
            {"cron": "0 9 * * 1-5"}, "2026-11-20T10:00Z", 2, ["2026-11-23T09:00Z", "2026-11-24T09:00Z"],
            id="cron-weekdays-friday-to-monday",
        ),
        pytest.param(
            {"interval": "P1D", "anchor_date": "2026-03-27T09:00:00", **BERLIN}, "2026-03-27T00:00Z", 4,
            ["2026-03-27T08:00Z", "2026-03-28T08:00Z", "2026-03-29T07:00Z", "2026-03-30T07:00Z"],
            id="interval-whole-days-keeps-local-time",
        ),
        pytest.param(
            {"interval": 86400, "anchor_date": "2026-03-28T02:30:00", **BERLIN}, "2026-03-28T00:00Z", 3,
            ["2026-03-28T01:30Z", "2026-03-29T01:00Z", "2026-03-30T00:30Z"],
            id="interval-daily-in-the-gap-runs-at-its-end",
        ),
        pytest.param(
            {"interval": 25200, "anchor_date": "2026-03-28T20:00:00", **BERLIN}, "2026-03-28T18:00Z", 4,
            ["2026-03-28T19:00Z", "2026-03-29T02:00Z", "2026-03-29T09:00Z", "2026-03-29T16:00Z"],
            id="interval-7h-is-elapsed-time-across-spring-forward",
        ),
        pytest.param(
            {"interval": "PT15M", "anchor_date": "2026-01-01T00:05:00Z"}, "2026-01-01T00:30Z", 3,
            ["2026-01-01T00:35Z", "2026-01-01T00:50Z", "2026-01-01T01:05Z"],
            id="interval-phase-from-anchor",
        ),
        pytest.param(
            {"interval": 3600, "anchor_date": "2030-01-01T00:00:00Z"}, "2026-01-01T00:00Z", 2,
            ["2030-01-01T00:00Z", "2030-01-01T01:00Z"],
            id="interval-nothing-before-its-anchor",
        ),
        pytest.param(
            {"rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0", **BERLIN}, "2026-03-28T00:00Z", 3,
            ["2026-03-28T08:00Z", "2026-03-29T07:00Z", "2026-03-30T07:00Z"],
            id="rrule-daily-09:00-berlin-across-spring-forward",
        ),
        pytest.param(
            {"rrule": "FREQ=HOURLY", **BERLIN}, "2026-10-24T23:30Z", 3,
            ["2026-10-25T00:00Z", "2026-10-25T01:00Z", "2026-10-25T02:00Z"],
            id="rrule-hourly-runs-every-real-hour-across-fall-back",
        ),
        pytest.param(
            {"rrule": "FREQ=HOURLY;BYHOUR=2,3", **BERLIN}, "2026-10-24T12:00Z", 3,
            ["2026-10-25T00:00Z", "2026-10-25T02:00Z", "2026-10-26T01:00Z"],
            id="rrule-byhour-in-repeated-hour-runs-once",
        ),
        pytest.param(
            {
                "rrule": "DTSTART:20260105T083000\nRRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO",
                "timezone": "America/New_York",
            },
            "2026-03-01T00:00Z", 3,
            ["2026-03-02T13:30Z", "2026-03-16T12:30Z", "2026-03-30T12:30Z"],
            id="rrule-dtstart-fortnightly-across-new-york-dst",
        ),
        pytest.param(
            {"rrule": "RRULE:FREQ=DAILY;BYHOUR=9;UNTIL=20260330T000000"}, "2026-03-28T00:00Z", 5,
            ["2026-03-28T09:00Z", "2026-03-29T09:00Z"],
            id="rrule-until-ends-it",
        ),
    ],
)  # fmt: skip
def test_next_occurrences(schedule: dict[str, Any], after: str, count: int, expected: list[str]) -> None:
    times = next_occurrences(SCHEDULE.validate_python(schedule), z(after), count=count)
    assert times == [z(t) for t in expected]
    assert all(t.tzinfo is UTC for t in times)


def test_until_bounds_inclusively_and_count_limits() -> None:
    hourly = SCHEDULE.validate_python({"cron": "0 * * * *"})
    start = z("2026-01-01T00:00Z")
    assert next_occurrences(hourly, start, count=10, until=z("2026-01-01T03:00Z")) == [
        z("2026-01-01T01:00Z"),
        z("2026-01-01T02:00Z"),
        z("2026-01-01T03:00Z"),
    ]
    assert len(next_occurrences(hourly, start, count=2)) == 2
    assert next_occurrences(hourly, start, count=0) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        next_occurrences(hourly, datetime(2026, 1, 1), count=1)


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param({"rrule": "FREQ=MINUTELY;INTERVAL=7", **BERLIN}, id="rrule-minutely"),
        pytest.param({"rrule": "FREQ=WEEKLY;INTERVAL=3;BYDAY=TU,FR;BYHOUR=6"}, id="rrule-weekly"),
        pytest.param({"cron": "*/13 * * * *", **BERLIN}, id="cron"),
        pytest.param({"interval": 4000}, id="interval"),
    ],
)
def test_the_phase_does_not_depend_on_where_the_search_starts(schedule: dict[str, Any]) -> None:
    """Several schedulers (or one restarted) must compute the same times: runs are keyed by them."""
    parsed = SCHEDULE.validate_python(schedule)
    early = next_occurrences(parsed, z("2026-10-20T00:00Z"), count=5000)
    later_start = z("2026-10-24T22:17Z")
    later = next_occurrences(parsed, later_start, count=20)
    assert later == [t for t in early if t > later_start][:20]


@pytest.mark.parametrize(
    ("schedule", "loc", "says"),
    [
        pytest.param({"cron": "nope"}, "schedules[0].cron", "not a valid cron expression", id="bad-cron"),
        pytest.param({"cron": "0 0 30 2 *"}, "schedules[0].cron", "never matches", id="february-30"),
        pytest.param({"cron": "R * * * *"}, "schedules[0].cron", "random fields", id="random-cron"),
        pytest.param(
            {"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "schedules[0].timezone", "unknown time zone",
            id="bad-zone",
        ),
        pytest.param({"cron": "0 9 * * *", "bogus": 1}, "schedules[0].bogus", "unknown field", id="unknown"),
        pytest.param({"cron": "0 9 * * *", "interval": 60}, "schedules[0]", "exactly one of", id="two-kinds"),
        pytest.param({"timezone": "UTC"}, "schedules[0]", "exactly one of", id="no-kind"),
        pytest.param("0 9 * * *", "schedules[0]", "exactly one of", id="not-an-object"),
        pytest.param({"interval": "P1M"}, "schedules[0].interval", "no fixed length", id="months"),
        pytest.param({"interval": 0}, "schedules[0].interval", "at least 1 second", id="zero-interval"),
        pytest.param({"interval": "soon"}, "schedules[0].interval", "ISO-8601 duration", id="bad-interval"),
        pytest.param({"rrule": "FREQ=DAILY;COUNT=3"}, "schedules[0].rrule", "COUNT is not", id="count"),
        pytest.param(
            {"rrule": "RRULE:FREQ=DAILY\nEXDATE:20260101T000000"}, "schedules[0].rrule", "no RDATE, EXDATE",
            id="exdate",
        ),
        pytest.param(
            {"rrule": "DTSTART;TZID=Europe/Berlin:20260101T090000\nRRULE:FREQ=DAILY"},
            "schedules[0].rrule", "no TZID", id="dtstart-with-zone",
        ),
        pytest.param(
            {"rrule": "FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=30"}, "schedules[0].rrule", "never matches",
            id="rrule-february-30",
        ),
        pytest.param({"rrule": "FREQ=SOMETIMES"}, "schedules[0].rrule", "not a valid rrule", id="bad-freq"),
        pytest.param({"rrule": "BYHOUR=9"}, "schedules[0].rrule", "FREQ is missing", id="no-freq"),
    ],
)  # fmt: skip
def test_a_bad_schedule_is_refused_naming_the_field(schedule: Any, loc: str, says: str) -> None:
    document = {"name": "etl", "flow_name": "etl", "entrypoint": "flows.etl:etl", "schedules": [schedule]}
    with pytest.raises(ValidationFailed) as caught:
        parse_deployment(document)
    errors = dict(caught.value.errors)
    assert loc in errors, caught.value.errors
    assert says in errors[loc]


def test_stored_form_and_summary() -> None:
    interval = SCHEDULE.validate_python({"interval": "PT1H30M", "timezone": "Europe/Berlin"})
    assert isinstance(interval, IntervalSchedule) and interval.interval == timedelta(minutes=90)
    assert interval.model_dump(mode="json")["interval"] == 5400  # seconds, not an ISO string
    assert SCHEDULE.validate_python(interval.model_dump(mode="json")) == interval
    assert schedule_summary(interval) == "every 90m (Europe/Berlin)"
    cron = SCHEDULE.validate_python({"cron": " 0  9 * * 1-5 "})
    assert schedule_summary(cron) == "cron 0 9 * * 1-5"
    assert schedule_summary(SCHEDULE.validate_python({"rrule": "FREQ=DAILY"})) == "rrule FREQ=DAILY"
    assert schedule_summary(SCHEDULE.validate_python({"interval": 86400})) == "every 1d"
