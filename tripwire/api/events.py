"""``/api/events``: intake (plain JSON and CloudEvents), history, one event, and a live tail (SSE).

Intake body (``POST /api/events``), by ``Content-Type``:

- ``application/json`` (or any other non-CloudEvents type): one event object, or a JSON array of events.
  A single object is a batch of one, so error locations always read ``events[<index>].<field>``.
- ``application/cloudevents+json``: one CloudEvent (structured mode).
- ``application/cloudevents-batch+json``: a JSON array of CloudEvents.
- any request with a ``ce-specversion`` header: one CloudEvent in binary mode (the body is its data).

A batch is all or nothing: 202 ``{"accepted": n, "ids": [...]}`` means every event is on the stream; any
error means none is. 400 malformed body, 413 body/batch/event too large, 422 invalid event.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import redis.asyncio as aioredis
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from redis.exceptions import RedisError

from events.codec import decode_event
from events.emit import EventEmitter
from events.history import MAX_LIMIT, EventFilter, EventPage, get_event, query_events
from events.model import Event
from triggers.patterns import PatternList
from tripwire.api.cloudevents import (
    BATCH_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    binary_to_cloudevent,
    cloudevent_to_event,
    cloudevents_to_events,
    is_binary,
    media_type,
)
from tripwire.api.errors import PayloadTooLarge, parse_json
from tripwire.errors import EventRejected, NotFound, ValidationFailed
from tripwire.settings import Settings

__all__ = ["Accepted", "events_router", "read_body", "read_limited", "tail_stream"]

logger = logging.getLogger(__name__)

_STREAM_ID = re.compile(r"\d+(-\d+)?\Z")
_RETRY_S = 1.0


class Accepted(BaseModel):
    """The answer to an accepted intake: every event is on the stream."""

    accepted: int = Field(description="number of events published")
    ids: list[UUID] = Field(description="their ids, in the order sent")


def _query_loc(loc: str) -> str:
    """``names[2]`` (EventFilter) → ``query.name[2]`` (the query parameter the caller sent)."""
    if loc.startswith("names"):
        loc = "name" + loc.removeprefix("names")
    return f"query.{loc}" if loc else "query"


def _matcher(names: list[str], resource: str | None) -> Callable[[Event], bool]:
    """Automation glob semantics (``*``, ``?``, a leading ``!`` negates); no filter matches everything."""
    name_patterns = PatternList(names)
    resource_patterns = PatternList(resource) if resource else None

    def matches(event: Event) -> bool:
        if name_patterns and not name_patterns.matches(event.event):
            return False
        return resource_patterns is None or resource_patterns.matches(event.resource_id)

    return matches


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with PayloadTooLarge (413) as soon as it exceeds ``limit`` bytes."""
    return await read_limited(request.headers.get("content-length"), request.stream(), limit)


async def read_limited(declared: str | None, chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """``chunks`` joined, refused with PayloadTooLarge (413) when the declared Content-Length or the bytes
    read so far exceed ``limit`` (for ASGI paths without a Request: tripwire/api/hooks.py)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge([("body", f"is {int(declared)} bytes, larger than the limit of {limit} bytes")])
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge([("body", f"is larger than the limit of {limit} bytes")])
        parts.append(chunk)
    return b"".join(parts)


def _check_count(n: int, settings: Settings) -> None:
    if n > settings.limits.max_batch:
        raise PayloadTooLarge([("body", f"has {n} events, more than the limit {settings.limits.max_batch}")])
    if n == 0:
        raise EventRejected([("body", "has no events: send an event object or a non-empty array")])


def _intake_items(request: Request, raw: bytes, settings: Settings) -> list[Event | dict[str, Any]]:
    """Events (CloudEvents already mapped) or raw event dicts for the emitter to validate."""
    content_type = request.headers.get("content-type")
    mt = media_type(content_type)
    if is_binary(request.headers) and mt not in (STRUCTURED_CONTENT_TYPE, BATCH_CONTENT_TYPE):
        ce = binary_to_cloudevent(request.headers.items(), content_type, raw)
        return [cloudevent_to_event(ce, loc="headers.ce-")]
    body = parse_json(raw)
    if mt == BATCH_CONTENT_TYPE:
        if isinstance(body, list):
            _check_count(len(body), settings)
        return list(cloudevents_to_events(body))
    if mt == STRUCTURED_CONTENT_TYPE:
        return [cloudevent_to_event(body, loc="events[0].")]
    items = [body] if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise EventRejected(
            [("body", f"must be an event object or an array of events, not {type(body).__name__}")]
        )
    _check_count(len(items), settings)
    errors = [
        (f"events[{i}]", "must be an event object")
        for i, item in enumerate(items)
        if not isinstance(item, dict)
    ]
    if errors:
        raise EventRejected(errors)
    return list(items)


def _stream_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(reply: Any) -> list[tuple[str, dict[Any, Any]]]:
    """XREAD's reply in RESP2 (list of pairs) or RESP3 (dict) shape, flattened to (id, fields)."""
    streams = reply.items() if isinstance(reply, dict) else (reply or [])
    out: list[tuple[str, dict[Any, Any]]] = []
    for _name, entries in streams:
        for entry_id, fields in entries:
            out.append((_stream_text(entry_id), fields))
    return out


async def tail_stream(
    client: aioredis.Redis,
    stream: str,
    start_id: str,
    matches: Callable[[Event], bool],
    closing: asyncio.Event,
    *,
    heartbeat_s: float = 15.0,
    block_ms: int = 1000,
    count: int = 500,
) -> AsyncIterator[bytes]:
    """Server-sent events of entries added to ``stream`` after ``start_id`` (XREAD BLOCK, no group).

    Each event is ``id: <stream id>`` plus one ``data: <event JSON>`` line; a ``: heartbeat`` comment goes out
    after ``heartbeat_s`` without one. Ends when ``closing`` is set; the caller's cancellation (client gone)
    also ends it. A Redis error is reported as a comment and retried; it does not end the stream.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.ensure_future(closing.wait())
    read: asyncio.Future[Any] | None = None
    last = start_id
    try:
        yield b": connected\n\n"
        next_beat = loop.time() + heartbeat_s
        while not closing.is_set():
            block = max(1, min(block_ms, int((next_beat - loop.time()) * 1000)))
            read = asyncio.ensure_future(client.xread({stream: last}, count=count, block=block))
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                return
            done, read = read, None
            try:
                reply = done.result()
            except (RedisError, OSError) as exc:
                logger.warning("event tail: Redis error, retrying in %.0f s: %s", _RETRY_S, exc)
                yield b": redis unavailable, retrying\n\n"
                await asyncio.wait({stop}, timeout=_RETRY_S)
                next_beat = loop.time() + heartbeat_s
                continue
            chunks = []
            for entry_id, fields in _entries(reply):
                last = entry_id
                data = fields.get(b"data", fields.get("data"))
                try:
                    event = decode_event(data.encode() if isinstance(data, str) else bytes(data or b""))
                except (ValidationError, ValueError, TypeError):
                    logger.warning("event tail: skipped entry %s of %s, not an event", entry_id, stream)
                    continue
                if matches(event):
                    chunks.append(
                        b"id: %s\ndata: %s\n\n" % (entry_id.encode(), event.model_dump_json().encode())
                    )
            if chunks:
                yield b"".join(chunks)
                next_beat = loop.time() + heartbeat_s
            elif loop.time() >= next_beat:
                yield b": heartbeat\n\n"
                next_beat = loop.time() + heartbeat_s
    finally:
        stop.cancel()
        if read is not None:
            read.cancel()


async def _start_id(client: aioredis.Redis, stream: str, last_event_id: str | None) -> str:
    if last_event_id:
        if not _STREAM_ID.match(last_event_id):
            raise ValidationFailed([("headers.last-event-id", "must be a stream id such as 1700000000000-0")])
        return last_event_id
    newest = await client.xrevrange(stream, count=1)
    return _stream_text(newest[0][0]) if newest else "0-0"


def events_router() -> APIRouter:
    """The ``/events`` routes (mounted under ``/api``, behind auth); state comes from ``app.state``."""
    router = APIRouter(prefix="/events", tags=["events"])

    @router.post(
        "",
        status_code=202,
        response_model=Accepted,
        summary="Accept events: one, a batch, or CloudEvents (structured, batch, binary)",
        responses={
            400: {"description": "malformed JSON (the message names line and column)"},
            413: {"description": "body, batch or an event over its size limit"},
            422: {"description": "invalid event; `loc` names the event index and field"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/Event"},
                                {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                            ]
                        }
                    },
                    STRUCTURED_CONTENT_TYPE: {"schema": {"type": "object"}},
                    BATCH_CONTENT_TYPE: {"schema": {"type": "array", "items": {"type": "object"}}},
                },
            }
        },
    )
    async def post_events(request: Request) -> Accepted:
        state = request.app.state
        settings: Settings = state.settings
        emitter: EventEmitter = state.emitter
        raw = await read_body(request, settings.limits.max_request_bytes)
        items = _intake_items(request, raw, settings)
        accepted = await emitter.emit_events(items)
        return Accepted(accepted=len(accepted), ids=[e.id for e in accepted])

    @router.get("", response_model=EventPage, summary="Event history, newest first, filtered")
    async def list_events(
        request: Request,
        name: Annotated[list[str], Query(description="event-name glob; repeat for any of several")] = [],  # noqa: B006
        resource: Annotated[str | None, Query(description="glob on the primary resource id")] = None,
        related: Annotated[str | None, Query(description="exact id of a related resource")] = None,
        since: Annotated[datetime | None, Query(description="occurred at or after (RFC 3339)")] = None,
        until: Annotated[datetime | None, Query(description="occurred before (RFC 3339)")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="events per page")] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> EventPage:
        try:
            flt = EventFilter.parse(
                {"names": name, "resource": resource, "related": related, "since": since, "until": until}
            )
            return await query_events(request.app.state.db, flt, limit=limit, cursor=cursor)
        except ValidationFailed as exc:
            raise ValidationFailed([(_query_loc(loc), msg) for loc, msg in exc.errors]) from None

    @router.get(
        "/tail",
        summary="Live tail: server-sent events of new events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "an endless event stream"}},
    )
    async def tail_events(
        request: Request,
        name: Annotated[list[str], Query(description="event-name glob; repeat for any of several")] = [],  # noqa: B006
        resource: Annotated[str | None, Query(description="glob on the primary resource id")] = None,
        last_event_id: Annotated[str | None, Header(description="resume after this stream id")] = None,
    ) -> StreamingResponse:
        state = request.app.state
        settings: Settings = state.settings
        stream = settings.streams.events
        start = await _start_id(state.redis, stream, last_event_id)
        body = tail_stream(
            state.redis,
            stream,
            start,
            _matcher(name, resource),
            state.closing,
            heartbeat_s=state.tail_heartbeat_s,
            block_ms=settings.streams.block_ms,
            count=settings.streams.batch_size,
        )
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get(
        "/{event_id}",
        response_model=Event,
        summary="One event by id",
        responses={404: {"description": "no such event"}},
    )
    async def one_event(request: Request, event_id: UUID) -> Any:
        event = await get_event(request.app.state.db, event_id)
        if event is None:
            raise NotFound(
                f"no event with id {event_id} in the history (it may not be recorded yet, or was pruned)"
            )
        return event

    return router
