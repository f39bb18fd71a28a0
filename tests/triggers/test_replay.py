"""Replay against stored history (SQLite and PostgreSQL): what would have fired, touching nothing live."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events.model import Event
from events.recorder import Recorder
from triggers.models import Automation
from triggers.replay import replay
from tripwire.db import Database

T0 = datetime(2026, 11, 14, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def failure(deployment: str, seconds: float) -> Event:
    return Event(
        occurred=at(seconds),
        received=at(seconds),
        event="tripwire.flow-run.Failed",
        resource={"tripwire.resource.id": f"run-{deployment}-{seconds}"},
        related=[{"tripwire.resource.id": deployment, "tripwire.resource.role": "deployment"}],
    )


def heartbeat(worker: str, seconds: float) -> Event:
    return Event(
        occurred=at(seconds),
        received=at(seconds),
        event="tripwire.worker.heartbeat",
        resource={"tripwire.resource.id": worker},
    )


THREE_FAILURES = Automation.model_validate(
    {
        "name": "etl keeps failing",
        "trigger": {
            "type": "event",
            "expect": ["tripwire.flow-run.Failed"],
            "for_each": ["related:deployment:tripwire.resource.id"],
            "threshold": 3,
            "within": 600,
        },
    }
)

QUIET_WORKER = Automation.model_validate(
    {
        "name": "worker went quiet",
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "expect": ["tripwire.worker.heartbeat"],
            "for_each": ["tripwire.resource.id"],
            "within": 30,
        },
    }
)


async def test_replay_reports_each_firing_of_the_week(database: Database) -> None:
    history = [failure("etl", s) for s in (0, 100, 200, 5000, 5100, 9000, 9100, 9200)]
    history += [failure("ml", s) for s in (0, 700, 1400)]  # never 3 within 10 minutes
    await Recorder(database).record(history)

    report = await replay(database, THREE_FAILURES, at(-60), at(86_400))

    assert report.events_scanned == len(history)
    triggered = [f for f in report.firings if f.kind == "triggered"]
    assert [(f.time, f.labels["related:deployment:tripwire.resource.id"]) for f in triggered] == [
        (at(200), "etl"),
        (at(9200), "etl"),
    ]
    assert triggered[0].event_id == history[2].id
    assert report.resolved == 2  # each firing is followed by a quiet 10 minutes


async def test_replay_fires_deadlines_between_events_and_until(database: Database) -> None:
    history = [heartbeat("w1", s) for s in (0, 20, 40, 100)] + [heartbeat("w2", s) for s in (0, 20)]
    await Recorder(database).record(history)

    report = await replay(database, QUIET_WORKER, at(0), at(200))

    fired = [(f.time, f.labels["tripwire.resource.id"]) for f in report.firings if f.kind == "triggered"]
    assert fired == [(at(50), "w2"), (at(70), "w1"), (at(130), "w1")]
    assert [f.time for f in report.firings if f.kind == "resolved"] == [at(100)]


async def test_replay_outside_the_window_sees_nothing(database: Database) -> None:
    await Recorder(database).record([failure("etl", s) for s in (0, 1, 2)])
    report = await replay(database, THREE_FAILURES, at(10), at(20))
    assert (report.events_scanned, report.fired) == (0, 0)
