"""The pure trigger evaluator: ``(automations, state, event | tick, now) -> (state, outcomes)``.

No I/O, no clock, no globals: state lives in a ``StateStore`` given to the constructor, time comes in
as ``now``, ids from ``new_id``. A service loads the records a batch needs (``keys_for``) and the due
records of a tick into an in-memory overlay, runs the evaluator, and writes the changes back.

Notes referred to by the tests:
1. Processing numbers (S1): each processed event and each tick takes the next number; a firing carries
   the number of the step it happened in. A service should seed ``processing_start`` with a value
   that only grows (e.g. from the stream id) so numbers stay ordered across restarts.
2. Per event (S8): matched event triggers run in declaration order, depth-first; each child firing is
   offered to its composite at once, which may fire and offer itself to its own parent.
3. Per tick (S1): release held events; fire due proactive keys by (deadline, declaration order, first
   seen); then resolve due reactive keys.
4. ``keys_for`` caches each event's matches, and ``process``/``handle_event`` reuse them for that same
   Event object, so a service that loads a batch's keys first matches every event once. Matching
   depends only on the automations, which do not change between the two calls.
5. Loop guard: the engine's own ``tripwire.automation.*`` events about automation A (triggered,
   resolved, action results) are never evaluated against A itself, whatever its trigger says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from itertools import pairwise
from uuid import UUID, uuid4

from events.model import RESOURCE_ID, Event
from triggers.compiled import AutomationPlan, CompositePlan, EventPlan, EventView, compile_automation
from triggers.index import AutomationIndex
from triggers.intake import Intake
from triggers.models import Automation
from triggers.outcomes import Firing, Outcomes, Resolution, from_us, to_us
from triggers.rules import (
    Fire,
    due_of,
    proactive_deadline,
    proactive_event,
    reactive_event,
    reactive_resolve,
)
from triggers.state import Record, StateStore, parse_record_key, record_key_values

__all__ = ["LIFECYCLE_PREFIX", "Evaluator"]

LIFECYCLE_PREFIX = "tripwire.automation."
"""Names of the engine's automation lifecycle events; their resource id is ``tripwire.automation.<id>``."""

_ORDINALS_PER_AUTOMATION = 1 << 20

Match = tuple[EventPlan, int, tuple[str, ...], str]
"""An event trigger an event matched: (plan, match flags, ``for_each`` values, record key)."""


class Evaluator:
    """Evaluates automations against events and ticks; returns top-level firings and resolutions."""

    def __init__(
        self,
        store: StateStore,
        *,
        intake: Intake | None = None,
        new_id: Callable[[], UUID] = uuid4,
        processing_start: int = 0,
    ) -> None:
        self.store = store
        self.intake = intake if intake is not None else Intake()
        self.processing = processing_start
        self._new_id = new_id
        self._plans: dict[UUID, AutomationPlan] = {}
        self._nodes: dict[tuple[str, str], EventPlan | CompositePlan] = {}
        self._serial = 0
        self._index: AutomationIndex | None = None
        self._matches: dict[UUID, tuple[EventView, list[Match]]] = {}

    # --- automations -------------------------------------------------------------------------------

    def add(self, automation: Automation) -> None:
        """Register an automation; it is evaluated once ``enable`` is called.

        Replacing a registered one with the same trigger keeps it enabled with its state (e.g. new
        actions); with a changed trigger it is registered disabled, to be enabled again.
        """
        self._serial += 1
        plan = compile_automation(automation, self._serial * _ORDINALS_PER_AUTOMATION)
        old = self._plans.get(automation.id)
        if old is not None:
            self.remove(automation.id)
            if old.signature == plan.signature:
                plan.enabled, plan.gen = old.enabled, old.gen
        self._plans[automation.id] = plan
        for node in (*plan.event_plans, *plan.composites):
            self._nodes[(plan.id_str, node.path)] = node
        self._index = None
        self._matches.clear()

    def remove(self, automation_id: UUID) -> None:
        """Forget an automation (its records become stale)."""
        plan = self._plans.pop(automation_id)
        for node in (*plan.event_plans, *plan.composites):
            self._nodes.pop((plan.id_str, node.path), None)
        self._index = None
        self._matches.clear()

    def enable(self, automation_id: UUID, now: datetime) -> None:
        """Start evaluating an automation enabled at ``now``; idempotent for the same ``now``.

        Records from an earlier enabling are stale. A proactive trigger without ``after`` and
        ``for_each`` is armed now (S6).
        """
        plan = self._plans[automation_id]
        at = to_us(now)
        gen = f"{at}/{plan.signature}"
        plan.enabled = True
        plan.gen = gen
        for node in plan.event_plans:
            if not node.arm_at_enable:
                continue
            key = node.record_key(())
            rec = self.store.get_many([key]).get(key)
            if rec is not None and rec.get("gen") == gen:
                continue
            rec = {"gen": gen, "seen": self.processing, "armed_at": at, "recorded": []}
            rec["deadline"] = at + node.within_us
            self.store.put(key, rec, rec["deadline"])

    def disable(self, automation_id: UUID) -> None:
        """Stop evaluating an automation; enabling it again starts from fresh state."""
        self._plans[automation_id].enabled = False

    def automation(self, automation_id: UUID) -> Automation:
        """A registered automation."""
        return self._plans[automation_id].automation

    @property
    def automations(self) -> list[Automation]:
        """Every registered automation."""
        return [plan.automation for plan in self._plans.values()]

    @property
    def index(self) -> AutomationIndex:
        """The matching index over every registered event trigger (rebuilt after changes)."""
        if self._index is None:
            self._index = AutomationIndex(p for plan in self._plans.values() for p in plan.event_plans)
        return self._index

    # --- entry points ------------------------------------------------------------------------------

    def handle_event(self, event: Event, now: datetime) -> Outcomes:
        """Deliver one event at wall time ``now`` (through intake: duplicates, skew, ``follows``)."""
        out = Outcomes()
        for ready, occurred_us in self.intake.accept(event, now):
            self.processing += 1
            self._process(*self._matched(ready), occurred_us, self.processing, out)
        return out

    def process(self, event: Event, occurred_us: int) -> Outcomes:
        """Evaluate one event that intake already admitted, at effective time ``occurred_us``."""
        out = Outcomes()
        self.processing += 1
        self._process(*self._matched(event), occurred_us, self.processing, out)
        return out

    def tick(self, now: datetime) -> Outcomes:
        """One timer tick at ``now`` (note 3)."""
        out = Outcomes()
        for ready, occurred_us in self.intake.release(now):
            self.processing += 1
            self._process(*self._matched(ready), occurred_us, self.processing, out)
        self.processing += 1
        self._due(to_us(now), self.processing, out)
        return out

    def forget_matches(self) -> None:
        """Drop matches cached by ``keys_for`` that were not processed (duplicates, held events)."""
        self._matches.clear()

    def keys_for(self, event: Event, candidates: list[EventPlan] | None = None) -> list[str]:
        """Record keys delivering this event may touch (matching only, no state read).

        Includes the held followers it would release and the composites above each matched trigger,
        so a service can load everything a batch needs in one round trip. ``candidates``: what
        ``index.candidates`` returned for this event's name and resource, if the caller has it.
        """
        keys: dict[str, None] = {}
        self._matched_keys(event, keys, candidates)
        for each in self.intake.followers(event.id):
            self._matched_keys(each, keys)
        return list(keys)

    def keys_for_tick(self, now: datetime, due_keys: Iterable[str] = ()) -> list[str]:
        """Record keys a tick at ``now`` may touch, given the keys that are due (e.g. from a ZSET)."""
        keys: dict[str, None] = {}
        for event in self.intake.releasable(now):
            self._matched_keys(event, keys)
        for key in due_keys:
            keys[key] = None
            node = self._nodes.get(parse_record_key(key))
            parent = None if node is None else node.parent
            while parent is not None:
                keys[parent.key] = None
                parent = parent.parent
        return list(keys)

    def _matched_keys(
        self, event: Event, keys: dict[str, None], candidates: list[EventPlan] | None = None
    ) -> None:
        view = EventView(event)
        matched = self._match(view, candidates)
        self._matches[event.id] = (view, matched)  # reused by ``process`` (note 4)
        for plan, _, _, key in matched:
            keys[key] = None
            parent = plan.parent
            while parent is not None:
                keys[parent.key] = None
                parent = parent.parent

    def _match(self, view: EventView, candidates: list[EventPlan] | None = None) -> list[Match]:
        matched = []
        own = None  # note 5: an automation never sees its own lifecycle events
        if view.name.startswith(LIFECYCLE_PREFIX):
            own = view.resource.get(RESOURCE_ID, "").removeprefix(LIFECYCLE_PREFIX)
        if candidates is None:
            candidates = self.index.candidates(view.name, view.resource)
        for plan in candidates:
            if plan.automation.enabled and plan.automation.id_str != own:
                flags = plan.classify(view)
                if flags:
                    values = plan.key_values(view)
                    matched.append((plan, flags, values, plan.record_key(values)))
        return matched

    # --- events ------------------------------------------------------------------------------------

    def _matched(self, event: Event) -> tuple[EventView, list[Match]]:
        """The event's view and matches: those ``keys_for`` cached for this same object (note 4), else new."""
        cached = self._matches.pop(event.id, None)
        if cached is not None and cached[0].event is event:
            return cached
        view = EventView(event)
        return view, self._match(view)

    def _process(
        self,
        view: EventView,
        matched: list[Match],
        t: int,
        pn: int,
        out: Outcomes,
    ) -> None:
        if not matched:
            return
        store = self.store
        records = store.get_many([m[3] for m in matched])
        eid = view.eid
        for plan, flags, values, key in matched:
            gen = plan.automation.gen
            rec = records.get(key)
            if rec is None or rec.get("gen") != gen:
                rec = {"gen": gen, "seen": pn}
            if plan.proactive:
                if proactive_event(plan, rec, flags, t, pn, eid):
                    out.resolutions.append(self._resolve(plan, rec, key, view.event.id, t, pn))
                store.put(key, rec, due_of(plan, rec))
                continue
            fire = reactive_event(plan, rec, flags, t, pn, eid)
            if fire is None:
                store.put(key, rec, due_of(plan, rec))
            elif plan.top_level:
                out.firings.append(self._fire_event_plan(plan, rec, key, values, fire, pn))
                store.put(key, rec, due_of(plan, rec))
            else:
                store.put(key, rec, due_of(plan, rec))
                self._offer(plan.parent, plan.slot, fire, pn, out)  # type: ignore[arg-type]

    # --- ticks -------------------------------------------------------------------------------------

    def _due(self, now: int, pn: int, out: Outcomes) -> None:
        due = self.store.due(now)
        if not due:
            return
        records = self.store.get_many([key for _, key in due])
        deadlines, resolutions = [], []
        for at, key in due:
            node = self._nodes.get(parse_record_key(key))
            rec = records.get(key)
            if not isinstance(node, EventPlan) or rec is None or not self._current(node, rec):
                self.store.delete(key)
                continue
            if node.proactive:
                deadlines.append((at, node.ordinal, rec.get("seen", 0), key, node, rec))
            else:
                resolutions.append((at, node.ordinal, rec.get("seen", 0), key, node, rec))
        deadlines.sort(key=lambda d: d[:3])
        for _, _, _, key, plan, rec in deadlines:
            fire = proactive_deadline(plan, rec, now)
            if fire is None:
                continue
            if plan.top_level:
                values = record_key_values(key)
                out.firings.append(self._fire_event_plan(plan, rec, key, values, fire, pn))
                self.store.put(key, rec, due_of(plan, rec))
            else:
                self.store.put(key, rec, due_of(plan, rec))
                self._offer(plan.parent, plan.slot, fire, pn, out)  # type: ignore[arg-type]
        resolutions.sort(key=lambda d: d[:3])
        for at, _, _, key, plan, rec in resolutions:
            if reactive_resolve(rec, now):
                out.resolutions.append(self._resolve(plan, rec, key, None, at, pn))
            self.store.put(key, rec, due_of(plan, rec))

    @staticmethod
    def _current(node: EventPlan, rec: Record) -> bool:
        return node.automation.enabled and rec.get("gen") == node.automation.gen

    # --- firings and resolutions -------------------------------------------------------------------

    def _fire_event_plan(
        self, plan: EventPlan, rec: Record, key: str, values: tuple[str, ...], fire: Fire, pn: int
    ) -> Firing:
        firing = self._firing(plan.automation, plan.path, plan.labels(values), key, fire, pn)
        rec["open"] = rec.get("open", 0) + 1
        rec["last_firing"] = str(firing.id)
        if not plan.proactive and plan.within_us:
            rec["resolve_at"] = rec["last_fire"] + plan.within_us
        return firing

    def _firing(
        self, automation: AutomationPlan, path: str, labels: dict[str, str], key: str, fire: Fire, pn: int
    ) -> Firing:
        at, eid, eids = fire
        return Firing(
            id=self._new_id(),
            automation_id=automation.id,
            trigger_path=path,
            labels=labels,
            event_id=None if eid is None else UUID(eid),
            event_ids=tuple(UUID(e) for e in eids),
            fire_time=from_us(at),
            processing=pn,
            record_key=key,
        )

    def _resolve(
        self, plan: EventPlan, rec: Record, key: str, event_id: UUID | None, at: int, pn: int
    ) -> Resolution:
        last = rec.pop("last_firing", None)
        count = rec.pop("open", 0)
        values = record_key_values(key)
        return Resolution(
            id=self._new_id(),
            automation_id=plan.automation.id,
            trigger_path=plan.path,
            labels=plan.labels(values),
            event_id=event_id,
            resolve_time=from_us(at),
            processing=pn,
            firing_id=None if last is None else UUID(last),
            firings=count,
            record_key=key,
        )

    def _offer(self, comp: CompositePlan, slot: int, fire: Fire, pn: int, out: Outcomes) -> None:
        """Offer a child firing to its composite (S8); fire the composite when it is complete."""
        key = comp.key
        gen = comp.automation.gen
        rec = self.store.get_many([key]).get(key)
        if rec is None or rec.get("gen") != gen:
            rec = {"gen": gen, "slots": [None] * comp.size}
        slots = rec["slots"]
        at, eid, eids = fire
        slots[slot] = [at, pn, eid, eids]
        if comp.within_us:
            low = max(s[0] for s in slots if s is not None) - comp.within_us
            for i, s in enumerate(slots):
                if s is not None and s[0] < low:
                    slots[i] = None
        if not _complete(comp, slots):
            self.store.put(key, rec)
            return
        newest = max((s for s in slots if s is not None), key=lambda s: (s[0], s[1]))
        events = list(dict.fromkeys(e for s in slots if s is not None for e in s[3]))
        rec["slots"] = [None] * comp.size
        self.store.put(key, rec)
        combined: Fire = (newest[0], newest[2], events)
        if comp.parent is None:
            out.firings.append(self._firing(comp.automation, comp.path, {}, key, combined, pn))
        else:
            self._offer(comp.parent, comp.slot, combined, pn, out)


def _complete(comp: CompositePlan, slots: list) -> bool:
    if not comp.sequence:
        return sum(s is not None for s in slots) >= comp.required
    if any(s is None for s in slots):
        return False
    for before, after in pairwise(slots):
        if (before[0], before[1]) >= (after[0], after[1]):
            return False
    eids = [s[2] for s in slots if s[2] is not None]
    return len(eids) == len(set(eids))
