"""Event history queries: filtered pages, newest first, with an opaque keyset cursor.

1. Order is ``(occurred desc, id desc)``: a total order, so a page boundary never skips or repeats an event
   even when many share one ``occurred``. The cursor holds the last event's ``(occurred, id)``; the next page
   is ``(occurred, id) < cursor``, served by ``ix_events_occurred_id``. Events recorded after a page was read
   appear in later pages only if they are older than the cursor.
2. Globs (``*`` any run of characters, ``?`` one character, everything else literal, case-sensitive, whole
   string) become ``GLOB`` on SQLite (``[`` escaped as ``[[]``) and ``LIKE ... ESCAPE '\\'`` on PostgreSQL
   (``%``, ``_`` and ``\\`` escaped). A pattern without wildcards is an equality; ``*`` alone is no condition.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import ColumnElement, Row, Select, literal, or_, select, tuple_

from events.model import Event, event_errors
from tripwire.db import Database
from tripwire.errors import ValidationFailed
from tripwire.tables import UTCDateTime, event_related, events

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "EventFilter",
    "EventPage",
    "decode_cursor",
    "encode_cursor",
    "get_event",
    "glob_condition",
    "query_events",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_NAMES = 100


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class EventFilter(BaseModel):
    """Which events to list; every given condition must hold. Times without an offset are UTC."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    names: list[str] = Field(
        default_factory=list,
        max_length=MAX_NAMES,
        description="event-name globs (* and ?), any may match; empty means every name",
    )
    resource: str | None = Field(None, min_length=1, description="glob on the primary resource's id")
    related: str | None = Field(None, min_length=1, description="id of a related resource (exact)")
    since: datetime | None = Field(None, description="occurred at or after this time")
    until: datetime | None = Field(None, description="occurred at or before this time")

    @field_validator("names")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for i, name in enumerate(value):
            if not name:
                raise ValueError(f"names[{i}] is empty: give an event name or a glob such as 'tripwire.*'")
            if len(name) > 1024:
                raise ValueError(f"names[{i}] is longer than 1024 characters")
        return value

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return _utc(value)

    @model_validator(mode="after")
    def _window(self) -> EventFilter:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(f"until ({self.until.isoformat()}) is before since ({self.since.isoformat()})")
        return self

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> EventFilter:
        """Validate user input; raise ValidationFailed naming each bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed(event_errors(exc)) from None


class EventPage(BaseModel):
    """One page of events, newest first; ``next_cursor`` is None on the last page."""

    events: list[Event]
    next_cursor: str | None = None


def encode_cursor(occurred: datetime, event_id: UUID) -> str:
    """The opaque cursor that continues after the event ``(occurred, event_id)``."""
    raw = f"{occurred.astimezone(UTC).isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The ``(occurred, id)`` a cursor points after; ValidationFailed naming 'cursor' if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, ident = raw.partition("|")
        occurred = datetime.fromisoformat(when)
        if occurred.tzinfo is None:
            raise ValueError("no offset")
        return occurred.astimezone(UTC), UUID(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationFailed(
            [("cursor", "is not a cursor from this API: pass the next_cursor of the previous page unchanged")]
        ) from None


def _sqlite_glob(pattern: str) -> str:
    return pattern.replace("[", "[[]")


def _like(pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch in "\\%_":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def glob_condition(column: ColumnElement[str], pattern: str, dialect: str) -> ColumnElement[bool] | None:
    """``column`` matches the glob ``pattern`` (note 2); None when every value matches."""
    if "*" not in pattern and "?" not in pattern:
        return column == pattern
    if set(pattern) == {"*"}:
        return None
    if dialect == "sqlite":
        return column.op("GLOB", is_comparison=True)(_sqlite_glob(pattern))
    return column.like(_like(pattern), escape="\\")


def _page_query(
    flt: EventFilter, dialect: str, after: tuple[datetime, UUID] | None, rows: int
) -> Select[Any]:
    """Note 1; with ``related``, the scan is driven by ``event_related``'s key (tables.py note 3)."""
    stmt = _columns()
    occurred: ColumnElement[datetime] = events.c.occurred
    ident: ColumnElement[UUID] = events.c.id
    if flt.related is not None:
        occurred, ident = event_related.c.occurred, event_related.c.event_id
        stmt = stmt.select_from(event_related.join(events, events.c.id == event_related.c.event_id)).where(
            event_related.c.resource_id == flt.related
        )
    names = [glob_condition(events.c.event, name, dialect) for name in flt.names]
    if names and all(c is not None for c in names):  # a "*" among the names matches every event
        stmt = stmt.where(or_(*(c for c in names if c is not None)))
    resource = None if flt.resource is None else glob_condition(events.c.resource_id, flt.resource, dialect)
    if resource is not None:
        stmt = stmt.where(resource)
    if flt.since is not None:
        stmt = stmt.where(occurred >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(occurred <= flt.until)
    if after is not None:
        bound = tuple_(literal(after[0], UTCDateTime()), literal(after[1], events.c.id.type))
        stmt = stmt.where(tuple_(occurred, ident) < bound)
    return stmt.order_by(occurred.desc(), ident.desc()).limit(rows)


def _event(row: Row[Any]) -> Event:
    return Event.model_validate(
        {
            "id": row.id,
            "occurred": row.occurred,
            "received": row.received,
            "event": row.event,
            "resource": row.resource,
            "related": row.related,
            "payload": row.payload,
            "follows": row.follows,
        }
    )


def _columns() -> Select[Any]:
    return select(
        events.c.id,
        events.c.occurred,
        events.c.received,
        events.c.event,
        events.c.resource,
        events.c.related,
        events.c.payload,
        events.c.follows,
    )


async def query_events(
    db: Database, flt: EventFilter | None = None, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> EventPage:
    """A page of the events matching ``flt``, newest first (note 1)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed([("limit", f"must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")])
    after = None if cursor is None else decode_cursor(cursor)
    stmt = _page_query(flt or EventFilter(), db.dialect, after, limit + 1)
    async with db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    page = [_event(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.occurred, last.id)
    return EventPage(events=page, next_cursor=next_cursor)


async def get_event(db: Database, event_id: UUID) -> Event | None:
    """The stored event with this id, or None."""
    if not isinstance(event_id, UUID):
        try:
            event_id = UUID(str(event_id))
        except ValueError:
            raise ValidationFailed([("id", f"{event_id!r} is not a UUID")]) from None
    async with db.read() as conn:
        row = (await conn.execute(_columns().where(events.c.id == event_id))).first()
    return None if row is None else _event(row)
