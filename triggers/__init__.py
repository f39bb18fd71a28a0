"""Automations and the trigger evaluator: models, matching, the pure core, state and the service."""

from triggers.evaluate import Evaluator
from triggers.models import (
    Action,
    ActionBase,
    Automation,
    CompoundTrigger,
    DoNothingAction,
    EventTrigger,
    SequenceTrigger,
    Trigger,
)
from triggers.outcomes import Firing, Outcomes, Resolution
from triggers.state import MemoryStateStore, StateStore

__all__ = [
    "Action",
    "ActionBase",
    "Automation",
    "CompoundTrigger",
    "DoNothingAction",
    "Evaluator",
    "EventTrigger",
    "Firing",
    "MemoryStateStore",
    "Outcomes",
    "Resolution",
    "SequenceTrigger",
    "StateStore",
    "Trigger",
]
