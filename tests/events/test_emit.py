"""EventEmitter against MemoryBus and RedisBus: validation first, then one all-or-nothing publish."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from events.bus import RedisBus, connect_redis
from events.codec import decode_event
from events.emit import EventEmitter
from events.memory import MemoryBus
from events.model import RESOURCE_ID, RESOURCE_ROLE, Event
from tripwire.errors import EventRejected
from tripwire.settings import EventLimits, Settings, StreamSettings

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
AnyBus = RedisBus | MemoryBus


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def bus(request: pytest.FixtureRequest, stream_settings: StreamSettings) -> AsyncIterator[AnyBus]:
    if request.param == "memory":
        yield MemoryBus(stream_settings)
        return
    client = await connect_redis(request.getfixturevalue("redis_server").url)
    yield RedisBus(client, stream_settings)
    keys = [k async for k in client.scan_iter(match=f"{stream_settings.prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def make_settings(tmp_path: Path, streams: StreamSettings, **limits: int) -> Settings:
    return Settings(home=tmp_path, streams=streams, limits=EventLimits(**limits))


@pytest.fixture
def emitter(bus: AnyBus, tmp_path: Path) -> EventEmitter:
    return EventEmitter(bus, make_settings(tmp_path, bus.streams), clock=lambda: NOW)


async def on_stream(bus: AnyBus) -> list[Event]:
    """Every event on the event stream, oldest first."""
    if isinstance(bus, MemoryBus):
        return [decode_event(e.data) for e in bus.read(bus.streams.events)]
    return [decode_event(fields[b"data"]) for _, fields in await bus.client.xrange(bus.streams.events)]


def failed_run(n: int = 1, **extra: object) -> dict[str, object]:
    return {
        "event": "tripwire.flow-run.Failed",
        "resource": {RESOURCE_ID: f"flow-run.{n}"},
        "related": [{RESOURCE_ID: "deployment.etl", RESOURCE_ROLE: "deployment"}],
        **extra,
    }


async def test_emit_event_builds_the_event_from_fields(emitter: EventEmitter, bus: AnyBus) -> None:
    event = await emitter.emit_event(
        event="tripwire.flow-run.Failed", resource={RESOURCE_ID: "flow-run.1"}, payload={"n": 1}
    )
    assert event.event == "tripwire.flow-run.Failed" and event.payload == {"n": 1}
    assert event.received == NOW
    assert await on_stream(bus) == [event]


async def test_emit_event_takes_an_event_and_stamps_received(emitter: EventEmitter, bus: AnyBus) -> None:
    given = Event(event="x.y", resource={RESOURCE_ID: "r"}, received=NOW - timedelta(days=1))
    event = await emitter.emit_event(given)
    assert event.id == given.id and event.received == NOW
    assert await on_stream(bus) == [event]


async def test_emit_event_refuses_an_event_with_fields(emitter: EventEmitter) -> None:
    with pytest.raises(TypeError, match="an Event and fields"):
        await emitter.emit_event(Event(event="x.y", resource={RESOURCE_ID: "r"}), payload={})


async def test_emit_event_names_the_bad_field(emitter: EventEmitter, bus: AnyBus) -> None:
    with pytest.raises(EventRejected) as caught:
        await emitter.emit_event(event="x.y", resource={"name": "no id"})
    assert caught.value.errors == [("resource", f"resource needs a '{RESOURCE_ID}' label")]
    assert await on_stream(bus) == []


async def test_emit_events_keeps_order_and_mixes_events_and_dicts(emitter: EventEmitter, bus: AnyBus) -> None:
    first = Event(event="x.first", resource={RESOURCE_ID: "r"})
    events = await emitter.emit_events([first, failed_run(2), failed_run(3, received="2020-01-01T00:00:00Z")])
    assert [e.event for e in events] == ["x.first", "tripwire.flow-run.Failed", "tripwire.flow-run.Failed"]
    assert events[0].id == first.id
    assert {e.received for e in events} == {NOW}  # the engine's intake time, whatever the producer said
    assert await on_stream(bus) == events


async def test_emit_events_publishes_nothing_when_one_is_bad(emitter: EventEmitter, bus: AnyBus) -> None:
    batch = [failed_run(1), failed_run(2, resource={}), failed_run(3, colour="red"), "not an event"]
    with pytest.raises(EventRejected) as caught:
        await emitter.emit_events(batch)  # type: ignore[list-item]
    locations = [loc for loc, _ in caught.value.errors]
    assert locations == ["events[1].resource", "events[2].colour", "events[3]"]
    assert ("events[2].colour", "unknown field") in caught.value.errors
    assert "events[1].resource: resource needs a 'tripwire.resource.id' label" in str(caught.value)
    assert await on_stream(bus) == []


async def test_emit_events_checks_limits(bus: AnyBus, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, bus.streams, max_bytes=1024, max_related=1)
    emitter = EventEmitter(bus, settings, clock=lambda: NOW)
    too_big = failed_run(1, payload={"blob": "x" * 2000})
    too_related = failed_run(2, related=[{RESOURCE_ID: f"t.{i}", RESOURCE_ROLE: "tag"} for i in range(2)])
    with pytest.raises(EventRejected) as caught:
        await emitter.emit_events([failed_run(0), too_big, too_related])
    [(big_at, big_msg), (rel_at, rel_msg)] = caught.value.errors
    assert big_at == "events[1].event" and "more than the limit 1024" in big_msg
    assert rel_at == "events[2].related" and rel_msg == "has 2 resources, more than the limit 1"
    assert await on_stream(bus) == []


async def test_emit_events_of_nothing_publishes_nothing(emitter: EventEmitter, bus: AnyBus) -> None:
    assert await emitter.emit_events([]) == []
    assert await on_stream(bus) == []


async def test_a_batch_larger_than_one_chunk_is_published_whole(emitter: EventEmitter, bus: AnyBus) -> None:
    events = await emitter.emit_events([failed_run(i) for i in range(2500)])
    assert [e.id for e in await on_stream(bus)] == [e.id for e in events]


async def test_a_naive_clock_is_read_as_utc(bus: AnyBus, tmp_path: Path) -> None:
    emitter = EventEmitter(bus, make_settings(tmp_path, bus.streams), clock=lambda: datetime(2026, 1, 1, 12))
    event = await emitter.emit_event(event="x.y", resource={RESOURCE_ID: "r"}, id=uuid4())
    assert event.received == datetime(2026, 1, 1, 12, tzinfo=UTC)
