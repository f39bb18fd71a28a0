"""Automations compiled for evaluation: plain objects with every pattern and path compiled once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from events.model import RESOURCE_ROLE, Event
from triggers.durations import to_us
from triggers.models import Automation, CompoundTrigger, EventTrigger, SequenceTrigger
from triggers.patterns import LabelSpec, PatternList
from triggers.state import composite_record_key, event_record_key
from triggers.where import WhereClause

__all__ = [
    "AFTER",
    "EXPECT",
    "AutomationPlan",
    "CompositePlan",
    "EventPlan",
    "EventView",
    "compile_automation",
    "event_json",
]

EXPECT = 1
AFTER = 2

KeyGetter = Callable[[Mapping[str, str], Sequence[Mapping[str, str]]], str]


def event_json(event: Event) -> dict[str, Any]:
    """The JSON ``where`` paths see: id, event, resource, related, payload, follows."""
    return {
        "id": str(event.id),
        "event": event.event,
        "resource": event.resource,
        "related": event.related,
        "payload": event.payload,
        "follows": None if event.follows is None else str(event.follows),
    }


class EventView:
    """One event as the evaluator reads it; the JSON document and id string are built on demand."""

    __slots__ = ("_doc", "_eid", "event", "name", "related", "resource")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.name = event.event
        self.resource = event.resource
        self.related = event.related
        self._doc: dict[str, Any] | None = None
        self._eid: str | None = None

    @property
    def doc(self) -> dict[str, Any]:
        if self._doc is None:
            self._doc = event_json(self.event)
        return self._doc

    @property
    def eid(self) -> str:
        if self._eid is None:
            self._eid = str(self.event.id)
        return self._eid


def _key_getter(name: str) -> KeyGetter:
    if name.startswith("related:"):
        role, _, label = name[len("related:") :].partition(":")

        def related_value(resource: Mapping[str, str], related: Sequence[Mapping[str, str]]) -> str:
            for r in related:
                if r.get(RESOURCE_ROLE) == role:
                    return r.get(label, "")
            return ""

        return related_value
    return lambda resource, related: resource.get(name, "")


class AutomationPlan:
    """An automation ready to evaluate.

    ``gen`` tags its records: the time (µs) it was enabled and a digest of its trigger, so records of
    an earlier enabling or of a changed trigger are stale and never misread.
    """

    __slots__ = (
        "automation",
        "composites",
        "enabled",
        "event_plans",
        "gen",
        "id",
        "id_str",
        "root",
        "signature",
    )

    def __init__(self, automation: Automation) -> None:
        self.automation = automation
        self.id = automation.id
        self.id_str = str(automation.id)
        self.signature = hashlib.sha256(automation.trigger.model_dump_json().encode()).hexdigest()[:12]
        self.enabled = False
        self.gen = ""
        self.event_plans: list[EventPlan] = []
        self.composites: list[CompositePlan] = []
        self.root: EventPlan | CompositePlan


class CompositePlan:
    """A compound or sequence trigger: one record of child slots."""

    __slots__ = ("automation", "key", "parent", "path", "required", "sequence", "size", "slot", "within_us")

    def __init__(
        self,
        automation: AutomationPlan,
        path: str,
        trigger: CompoundTrigger | SequenceTrigger,
        parent: CompositePlan | None,
        slot: int,
    ) -> None:
        self.automation = automation
        self.path = path
        self.parent = parent
        self.slot = slot
        self.size = len(trigger.triggers)
        self.sequence = isinstance(trigger, SequenceTrigger)
        self.required = self.size if self.sequence else trigger.required()  # type: ignore[union-attr]
        self.within_us = to_us(trigger.within)
        self.key = composite_record_key(automation.id_str, path)


class EventPlan:
    """An event trigger: matching, keying and its posture's parameters."""

    __slots__ = (
        "after",
        "arm_at_enable",
        "automation",
        "cooldown_us",
        "expect",
        "for_each",
        "key_getters",
        "match",
        "ordinal",
        "parent",
        "path",
        "proactive",
        "related",
        "slot",
        "threshold",
        "top_level",
        "where",
        "within_us",
    )

    def __init__(
        self,
        automation: AutomationPlan,
        path: str,
        trigger: EventTrigger,
        parent: CompositePlan | None,
        slot: int,
        ordinal: int,
    ) -> None:
        self.automation = automation
        self.path = path
        self.parent = parent
        self.slot = slot
        self.ordinal = ordinal
        self.top_level = parent is None
        self.expect = PatternList(trigger.expect) if trigger.expect else None
        self.after = PatternList(trigger.after) if trigger.after else None
        self.match = LabelSpec(trigger.match)
        self.related = tuple(s for s in (LabelSpec(spec) for spec in trigger.related_specs()) if s)
        where = trigger.compiled_where()
        self.where: WhereClause | None = where if where else None
        self.for_each = tuple(trigger.for_each)
        self.key_getters = tuple(_key_getter(name) for name in trigger.for_each)
        self.proactive = trigger.posture == "Proactive"
        self.threshold = trigger.threshold
        self.within_us = to_us(trigger.within)
        self.cooldown_us = to_us(trigger.cooldown)
        self.arm_at_enable = self.proactive and self.after is None and not self.for_each

    def classify(self, view: EventView) -> int:
        """``EXPECT | AFTER`` flags when the trigger considers the event, else 0 (S2)."""
        name = view.name
        flags = 0
        if self.expect is None or self.expect.matches(name):
            flags = EXPECT
        if self.after is not None and self.after.matches(name):
            flags |= AFTER
        if not flags:
            return 0
        if self.match.items and not self.match.matches(view.resource):
            return 0
        for spec in self.related:
            if not spec.matches_any(view.related):
                return 0
        if self.where is not None and not self.where.matches(view.doc):
            return 0
        return flags

    def key_values(self, view: EventView) -> tuple[str, ...]:
        """The event's ``for_each`` key (missing values are ``""``)."""
        resource, related = view.resource, view.related
        return tuple(get(resource, related) for get in self.key_getters)

    def record_key(self, values: tuple[str, ...]) -> str:
        return event_record_key(self.automation.id_str, self.path, values)

    def labels(self, values: Sequence[str]) -> dict[str, str]:
        """The triggering labels of a firing of key ``values``."""
        return dict(zip(self.for_each, values, strict=True))


def compile_automation(automation: Automation, ordinal_base: int) -> AutomationPlan:
    """Compile an automation; its event triggers get ordinals from ``ordinal_base`` in declaration order."""
    plan = AutomationPlan(automation)

    def visit(trigger: Any, path: str, parent: CompositePlan | None, slot: int) -> EventPlan | CompositePlan:
        if isinstance(trigger, EventTrigger):
            node = EventPlan(plan, path, trigger, parent, slot, ordinal_base + len(plan.event_plans))
            plan.event_plans.append(node)
            return node
        composite = CompositePlan(plan, path, trigger, parent, slot)
        plan.composites.append(composite)
        for i, child in enumerate(trigger.triggers):
            visit(child, f"{path}.{i}", composite, i)
        return composite

    plan.root = visit(automation.trigger, "t", None, 0)
    return plan
