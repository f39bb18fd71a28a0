"""Tripwire: an event-driven automation engine for data and ML pipelines.

    from tripwire import Automation, EventTrigger, emit_event, flow, task

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
    from tripwire.orchestration.cache import task_input_hash
    from tripwire.orchestration.flows import Flow, flow
    from tripwire.orchestration.futures import unmapped
    from tripwire.orchestration.tasks import Task, task
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
    "Flow": "tripwire.orchestration.flows",
    "flow": "tripwire.orchestration.flows",
    "Task": "tripwire.orchestration.tasks",
    "task": "tripwire.orchestration.tasks",
    "unmapped": "tripwire.orchestration.futures",
    "task_input_hash": "tripwire.orchestration.cache",
}

__all__ = [
    "Automation",
    "CompoundTrigger",
    "DoNothingAction",
    "Event",
    "EventTrigger",
    "Flow",
    "SequenceTrigger",
    "Settings",
    "Task",
    "TripwireError",
    "ValidationFailed",
    "connect",
    "emit_event",
    "emit_events",
    "flow",
    "task",
    "task_input_hash",
    "unmapped",
]


__getattr__, __dir__ = lazy_exports("tripwire", globals(), _HOMES)
