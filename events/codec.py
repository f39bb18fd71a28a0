"""The stream body of an event: its JSON, readable in redis-cli."""

from __future__ import annotations

from events.model import Event

__all__ = ["decode_event", "encode_event"]


def encode_event(event: Event) -> bytes:
    """The event as UTF-8 JSON bytes (the ``data`` field of a stream entry)."""
    return event.model_dump_json().encode()


def decode_event(data: bytes) -> Event:
    """The event from a stream entry's ``data`` field; raises pydantic.ValidationError when it is not one."""
    return Event.model_validate_json(data)
