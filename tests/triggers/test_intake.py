"""Intake (conformance S3): duplicates, clock skew and ``follows`` holding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from events.model import Event
from triggers.intake import Intake
from triggers.outcomes import to_us

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(
    occurred: float, *, follows: UUID | None = None, received: float | None = None, eid: UUID | None = None
) -> Event:
    return Event(
        id=eid or uuid4(),
        occurred=at(occurred),
        event="x",
        resource={"tripwire.resource.id": "r"},
        follows=follows,
        received=None if received is None else at(received),
    )


def ids(ready: list[tuple[Event, int]]) -> list[UUID]:
    return [e.id for e, _ in ready]


def test_duplicates_are_ignored_within_the_horizon_and_forgotten_after() -> None:
    intake = Intake(dedup_horizon_s=3600)
    e = ev(0)
    assert ids(intake.accept(e, at(0))) == [e.id]
    assert intake.accept(e, at(3599)) == []
    assert intake.accept(ev(3601), at(3601))  # pushes the horizon past the first delivery
    assert not intake.is_processed(e.id)
    assert ids(intake.accept(e, at(3602))) == [e.id]


def test_a_held_event_counts_as_delivered() -> None:
    intake = Intake()
    e = ev(10, follows=uuid4())
    assert intake.accept(e, at(10)) == []
    assert intake.accept(e, at(11)) == []
    assert intake.held == [e]


@pytest.mark.parametrize(
    ("occurred", "received", "effective"),
    [
        pytest.param(3700, 100, 100, id="far-future-clamped"),
        pytest.param(160, 100, 160, id="exactly-60s-ahead-kept"),
        pytest.param(160.000001, 100, 100, id="just-over-60s-clamped"),
        pytest.param(50, 100, 50, id="past-kept"),
    ],
)
def test_clock_skew(occurred: float, received: float, effective: float) -> None:
    intake = Intake(max_future_skew_s=60)
    [(_, t)] = intake.accept(ev(occurred, received=received), at(received))
    assert t == to_us(at(effective))


def test_follows_holds_until_the_predecessor_is_processed_then_runs_depth_first() -> None:
    intake = Intake()
    leader = ev(0)
    b = ev(20, follows=leader.id)
    a = ev(10, follows=leader.id)
    a_child = ev(30, follows=a.id)
    for e in (b, a_child, a):
        assert intake.accept(e, at(40)) == []
    assert intake.followers(leader.id) == [a, a_child, b]
    assert ids(intake.accept(leader, at(41))) == [leader.id, a.id, a_child.id, b.id]
    assert intake.held == []


def test_follows_wait_over_at_delivery_processes_at_once() -> None:
    intake = Intake(follows_wait_s=900)
    late = ev(100, follows=uuid4())
    assert ids(intake.accept(late, at(1000))) == [late.id]


def test_an_event_following_itself_is_not_held() -> None:
    intake = Intake()
    eid = uuid4()
    assert ids(intake.accept(ev(0, follows=eid, eid=eid), at(0))) == [eid]


def test_release_at_tick_in_occurred_then_delivery_order() -> None:
    intake = Intake(follows_wait_s=900)
    missing = uuid4()
    second = ev(100, follows=missing)
    first = ev(100, follows=missing)
    third = ev(50, follows=missing)
    child = ev(500, follows=second.id)
    for e in (second, first, third, child):
        intake.accept(e, at(600))
    assert intake.release(at(949.999)) == []
    assert [e.id for e in intake.releasable(at(1000))] == [third.id, second.id, child.id, first.id]
    assert ids(intake.release(at(999.999))) == [third.id]
    assert ids(intake.release(at(1000))) == [second.id, child.id, first.id]
    assert intake.held == []
    assert intake.release(at(5000)) == []
