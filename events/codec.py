"""The stream body of an event: its JSON, readable in redis-cli."""

from __future__ import annotations

from events.model import Event

__all__ = ["decode_event", "encode_event"]

_SERIALIZER = Event.__pydantic_serializer__


def encode_event(event: Event) -> bytes:
    """The event as UTF-8 JSON bytes (the ``data`` field of a stream entry)."""
    return _SERIALIZER.to_json(event)  # bytes straight from pydantic-core: no str round trip


def decode_event(data: bytes) -> Event:
    """The event from a stream entry's ``data`` field; raises pydantic.ValidationError when it is not one."""
    return Event.model_validate_json(data)
