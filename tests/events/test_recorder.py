"""The recorder: idempotent batch writes (SQLite and PostgreSQL), and its service (MemoryBus and RedisBus)."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import DropTable

from events.bus import RedisBus
from events.codec import encode_event
from events.history import get_event
from events.memory import MemoryBus
from events.model import Event
from events.ports import Bus, StreamEntry
from events.recorder import RECORDER_GROUP, SQLITE_IN_CHUNK, NotRecorded, Recorder, RecorderService
from tripwire.db import Database
from tripwire.services import ServiceState
from tripwire.settings import Settings
from tripwire.tables import event_related, events

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def failed_run(i: int = 0, **fields: Any) -> Event:
    """A flow run failure of deployment ``etl``, ``i`` seconds after T0."""
    data: dict[str, Any] = {
        "occurred": T0 + timedelta(seconds=i),
        "event": "tripwire.flow-run.Failed",
        "resource": {"tripwire.resource.id": f"tripwire.flow-run.{i}", "tripwire.resource.name": f"run-{i}"},
        "related": [
            {"tripwire.resource.id": "tripwire.deployment.etl", "tripwire.resource.role": "deployment"},
            {"tripwire.resource.id": "tripwire.flow.nightly", "tripwire.resource.role": "flow"},
        ],
        "payload": {"attempt": i, "message": "boom"},
        "received": T0 + timedelta(seconds=i, milliseconds=5),
    }
    data.update(fields)
    return Event.model_validate(data)


async def count(db: Database, table: Any) -> int:
    async with db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def eventually(condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Await until ``condition()`` (sync or async) is true, polling; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)


# -- Recorder ------------------------------------------------------------------------------------------------


async def test_record_returns_the_number_stored(database: Database) -> None:
    recorder = Recorder(database)
    assert await recorder.record([failed_run(i) for i in range(5)]) == 5
    assert await count(database, events) == 5
    assert await count(database, event_related) == 10
    assert await recorder.record([]) == 0


async def test_duplicate_ids_are_stored_once(database: Database) -> None:
    recorder = Recorder(database)
    batch = [failed_run(i) for i in range(3)]
    assert await recorder.record(batch) == 3
    assert await recorder.record(batch) == 0  # a redelivered batch
    assert (
        await recorder.record([batch[0], failed_run(3), failed_run(3).model_copy(update={"id": batch[1].id})])
        == 1
    )
    twice = failed_run(4)
    assert await recorder.record([twice, twice]) == 1  # repeated within one batch
    assert await count(database, events) == 5
    assert await count(database, event_related) == 10


async def test_a_reused_id_keeps_the_first_event_and_its_related_rows(database: Database) -> None:
    recorder = Recorder(database)
    first = failed_run(1)
    impostor = failed_run(
        2,
        id=first.id,
        related=[
            {"tripwire.resource.id": "tripwire.deployment.other", "tripwire.resource.role": "deployment"}
        ],
    )
    assert await recorder.record([first]) == 1
    assert await recorder.record([impostor]) == 0
    assert await get_event(database, first.id) == first
    async with database.read() as conn:
        related = (await conn.execute(select(event_related.c.resource_id))).scalars().all()
    assert sorted(related) == ["tripwire.deployment.etl", "tripwire.flow.nightly"]


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(failed_run(0), id="typical"),
        pytest.param(failed_run(0, received=None, related=[], payload={}), id="minimal"),
        pytest.param(
            failed_run(
                0,
                occurred=datetime(2026, 3, 1, 14, 30, 0, tzinfo=timezone(timedelta(hours=2))),
                follows=uuid.uuid4(),
                payload={"nested": {"list": [1, 2.5, None, True], "text": 'héllo ✓ "quoted" \\'}},
            ),
            id="offset-time-follows-unicode",
        ),
        pytest.param(
            failed_run(0, occurred=datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)), id="microseconds"
        ),
    ],
)
async def test_a_stored_event_reads_back_equal(database: Database, event: Event) -> None:
    assert await Recorder(database).record([event]) == 1
    stored = await get_event(database, event.id)
    assert stored == event
    assert stored is not None and stored.occurred.tzinfo is not None


async def test_batches_larger_than_one_id_lookup(database: Database) -> None:
    batch = [failed_run(i, related=[]) for i in range(SQLITE_IN_CHUNK + 10)]
    recorder = Recorder(database)
    assert await recorder.record(batch[:20]) == 20
    assert await recorder.record(batch) == len(batch) - 20
    assert await count(database, events) == len(batch)


# -- RecorderService -----------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def bus(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Bus]:
    if request.param == "memory":
        bus: Bus = MemoryBus(settings.streams)
        yield bus
        await bus.close()
        return
    client = aioredis.Redis.from_url(settings.effective_redis_url)  # the private redis-server
    bus = RedisBus(client, settings.streams)
    yield bus
    await bus.close()
    await client.aclose()


async def pending(bus: Bus, stream: str) -> int:
    if isinstance(bus, MemoryBus):
        return len(bus.pending(stream, RECORDER_GROUP))
    assert isinstance(bus, RedisBus)
    info = await bus.client.xpending(stream, RECORDER_GROUP)
    return int(info["pending"])


async def test_service_records_the_stream_and_skips_what_is_not_an_event(
    database: Database, bus: Bus, settings: Settings
) -> None:
    stream = settings.streams.events
    good = [failed_run(i) for i in range(5)]
    await bus.publish(stream, [encode_event(e) for e in good[:3]])  # backlog from before the start
    service = RecorderService(bus, database, settings, consumer="recorder-test")
    assert service.name == "recorder"
    assert service.state == ServiceState.CREATED
    await service.start()
    try:
        assert service.state == ServiceState.RUNNING
        await bus.publish(
            stream,
            [
                b"not json",
                b'{"event": "x"}',
                encode_event(good[3]),
                encode_event(good[4]),
                encode_event(good[0]),
            ],
        )
        await eventually(lambda: service.stats.recorded == 5 and service.stats.undecodable == 2)

        async def nothing_pending() -> bool:
            return await pending(bus, stream) == 0

        await eventually(nothing_pending)  # the undecodable entries are acknowledged too
    finally:
        await service.stop()
    assert service.state == ServiceState.STOPPED
    assert service.stats.duplicates == 1
    assert await count(database, events) == 5
    for event in good:
        assert await get_event(database, event.id) == event


async def test_database_failures_are_raised_to_leave_the_batch_pending(
    empty_database_url: str, settings: Settings
) -> None:
    async with Database(empty_database_url) as db:  # a database of its own: the test breaks its schema
        service = RecorderService(MemoryBus(settings.streams), db, settings, consumer="c")
        async with db.begin() as conn:
            await conn.execute(DropTable(event_related))
        with pytest.raises(DBAPIError):
            await service.handle([StreamEntry("1-0", encode_event(failed_run(1)))])
        assert service.stats.recorded == 0
        assert await count(db, events) == 0  # the transaction was rolled back


async def test_events_the_database_refuses_do_not_hold_back_the_rest(
    database: Database, settings: Settings
) -> None:
    """PostgreSQL cannot store NUL characters; SQLite can. Either way the good events are stored."""
    service = RecorderService(MemoryBus(settings.streams), database, settings, consumer="c")
    bad = failed_run(3, payload={"note": "nul \u0000 inside"})
    batch = [failed_run(i) for i in range(3)] + [bad] + [failed_run(i) for i in range(4, 8)]
    entries = [StreamEntry(f"{i}-0", encode_event(e)) for i, e in enumerate(batch)]
    if database.dialect == "postgresql":
        with pytest.raises(NotRecorded, match=str(bad.id)):
            await service.handle(entries)
        assert (service.stats.recorded, service.stats.refused) == (7, 1)
        assert await get_event(database, bad.id) is None
        with pytest.raises(NotRecorded):  # the bus retries entries one by one; only the bad one fails again
            await service.handle([entries[3]])
        await service.handle(entries[:3])
        assert service.stats.recorded == 7
    else:
        await service.handle(entries)
        assert service.stats.recorded == 8
        assert await get_event(database, bad.id) == bad
