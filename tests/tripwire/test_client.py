"""``tripwire.emit_event`` / ``emit_events`` / ``connect``: straight onto the real Redis stream."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

import tripwire
from events.codec import decode_event
from tripwire.errors import EventRejected
from tripwire.settings import Settings

pytestmark = pytest.mark.redis


async def test_emit_event_puts_it_on_the_stream(settings: Settings, redis_client: aioredis.Redis) -> None:
    event = await tripwire.emit_event(
        event="etl.finished", resource={"tripwire.resource.id": "etl"}, payload={"rows": 3}, settings=settings
    )
    ((_, fields),) = await redis_client.xrange(settings.streams.events)
    stored = decode_event(fields[b"data"])
    assert (stored.id, stored.payload, stored.received is not None) == (event.id, {"rows": 3}, True)


async def test_emit_events_is_all_or_nothing(settings: Settings, redis_client: aioredis.Redis) -> None:
    good = {"event": "a", "resource": {"tripwire.resource.id": "x"}}
    with pytest.raises(EventRejected, match=r"events\[1\]\.resource"):
        await tripwire.emit_events([good, {"event": "b", "resource": {}}], settings=settings)
    assert await redis_client.xlen(settings.streams.events) == 0
    async with tripwire.connect(settings) as tw:
        await tw.emit_events([good, good | {"event": "b"}])
    assert await redis_client.xlen(settings.streams.events) == 2
