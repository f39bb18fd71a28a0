"""Emitting events: validate, stamp ``received``, check limits, publish to the event stream all or nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from events.codec import encode_event
from events.model import Event, check_limits, event_errors, now_utc
from events.ports import Bus
from tripwire.errors import EventRejected
from tripwire.settings import Settings

__all__ = ["EventEmitter"]


class EventEmitter:
    """Puts events on ``settings.streams.events``; nothing is published unless every event is valid."""

    def __init__(self, bus: Bus, settings: Settings, *, clock: Callable[[], datetime] = now_utc) -> None:
        self._bus = bus
        self._stream = settings.streams.events
        self._limits = settings.limits
        self._clock = clock

    async def emit_event(self, event: Event | str | None = None, **fields: Any) -> Event:
        """Emit one event: an Event, or the fields of one (``event="x.y", resource={...}, ...``)."""
        if isinstance(event, Event):
            if fields:
                raise TypeError(f"emit_event got an Event and fields {sorted(fields)}; pass one or the other")
            data: Event | dict[str, Any] = event
        else:
            data = fields if event is None else {"event": event, **fields}
        (emitted,) = await self._emit([data], where=None)
        return emitted

    async def emit_events(self, events: Sequence[Event | dict[str, Any]]) -> list[Event]:
        """Emit a batch; a bad event raises EventRejected naming ``events[i].<field>``, publishing nothing.

        The whole batch goes out in one MULTI/EXEC, whatever its size (RedisBus chunks the XADDs into EVALs
        of 1,000 inside it), so it is all or nothing, not per chunk.
        """
        return await self._emit(events, where="events")

    def prepare(self, items: Sequence[Event | dict[str, Any]]) -> tuple[list[Event], list[bytes]]:
        """Validate, stamp and encode a batch without publishing it: the events and their stream bodies.

        For callers that write the bodies to ``stream`` themselves, together with other keys in one round
        trip (the webhook intake, events/webhooks/ledger.py). Raises EventRejected as ``emit_events`` does.
        """
        return self._prepare(items, where="events")

    @property
    def stream(self) -> str:
        """The event stream this emitter publishes to."""
        return self._stream

    async def _emit(self, items: Sequence[Event | dict[str, Any]], where: str | None) -> list[Event]:
        if not items:
            return []
        events, bodies = self._prepare(items, where)
        await self._bus.publish(self._stream, bodies)
        return events

    def _prepare(
        self, items: Sequence[Event | dict[str, Any]], where: str | None
    ) -> tuple[list[Event], list[bytes]]:
        now = self._clock()
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
        events: list[Event] = []
        bodies: list[bytes] = []
        errors: list[tuple[str, str]] = []
        for i, item in enumerate(items):
            at = f"{where}[{i}]" if where else ""
            try:
                event = self._stamp(item, now)
                body = encode_event(event)
                check_limits(event, self._limits, size_bytes=len(body))
            except ValidationError as exc:
                errors.extend(_located(at, event_errors(exc)))
            except EventRejected as exc:
                errors.extend(_located(at, exc.errors))
            else:
                events.append(event)
                bodies.append(body)
        if errors:
            raise EventRejected(errors)
        return events, bodies

    @staticmethod
    def _stamp(item: Event | dict[str, Any], now: datetime) -> Event:
        if isinstance(item, Event):
            return item.received_now(now)
        if isinstance(item, dict):
            return Event.model_validate({**item, "received": now})
        return Event.model_validate(item)  # raises: not an object


def _located(at: str, errors: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    if not at:
        return list(errors)
    return [(f"{at}.{loc}" if loc else at, msg) for loc, msg in errors]
