"""Tripwire: an event-driven automation engine for data and ML pipelines.

    from tripwire import Automation, EventTrigger, emit_event

The names are loaded on first use (PEP 562): ``events`` and ``triggers`` import ``tripwire.errors`` and
``tripwire.settings``, so importing them eagerly here would be circular.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tripwire.lazy import lazy_exports

if TYPE_CHECKING:
    from events.model import Event
    from triggers.models import Automation, CompoundTrigger, DoNothingAction, EventTrigger, SequenceTrigger
    from tripwire.client import connect, emit_event, emit_events
    from tripwire.errors import TripwireError, ValidationFailed
    from tripwire.settings import Settings

_HOMES = {
    "Event": "events.model",
    "Automation": "triggers.models",
    "CompoundTrigger": "triggers.models",
    "DoNothingAction": "triggers.models",
    "EventTrigger": "triggers.models",
    "SequenceTrigger": "triggers.models",
    "connect": "tripwire.client",
    "emit_event": "tripwire.client",
    "emit_events": "tripwire.client",
    "TripwireError": "tripwire.errors",
    "ValidationFailed": "tripwire.errors",
    "Settings": "tripwire.settings",
}

__all__ = [
    "Automation",
    "CompoundTrigger",
    "DoNothingAction",
    "Event",
    "EventTrigger",
    "SequenceTrigger",
    "Settings",
    "TripwireError",
    "ValidationFailed",
    "connect",
    "emit_event",
    "emit_events",
]


__getattr__, __dir__ = lazy_exports("tripwire", globals(), _HOMES)
