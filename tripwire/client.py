"""Emitting events from Python producers: straight onto the Redis stream, batched, no server needed.

    async with tripwire.connect() as tw:          # Settings() from TRIPWIRE_* unless given
        await tw.emit_event(event="etl.finished", resource={"tripwire.resource.id": "etl"})

``emit_event``/``emit_events`` at module level open a connection per call: fine for scripts, use
``connect()`` in anything that emits repeatedly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from events.bus import RedisBus, connect_redis
from events.emit import EventEmitter
from events.model import Event
from tripwire.settings import Settings

__all__ = ["connect", "emit_event", "emit_events"]


@asynccontextmanager
async def connect(settings: Settings | None = None) -> AsyncIterator[EventEmitter]:
    """An emitter on the configured Redis (``settings.effective_redis_url``); closed on exit."""
    settings = settings if settings is not None else Settings()
    client = await connect_redis(settings.effective_redis_url)
    bus = RedisBus(client, settings.streams)
    try:
        yield EventEmitter(bus, settings)
    finally:
        await bus.close()
        await client.aclose()


async def emit_event(event: Event | None = None, *, settings: Settings | None = None, **fields: Any) -> Event:
    """Emit one event (an Event, or its fields); returns it once it is on the stream."""
    async with connect(settings) as emitter:
        return await emitter.emit_event(event, **fields)


async def emit_events(
    events: Sequence[Event | dict[str, Any]], *, settings: Settings | None = None
) -> list[Event]:
    """Emit a batch, all or nothing; returns the events once they are on the stream."""
    async with connect(settings) as emitter:
        return await emitter.emit_events(list(events))
