"""The posture rules (conformance S4 to S7) as pure functions over one key's record.

Times are integer microseconds; a *fire* is ``(fire time, triggering event id | None, [event ids])``.
Each function mutates the record it is given; the caller stores it with ``due_of(plan, record)``.

Notes referred to by the tests:
1. Reactive without ``after`` (S4): cooldown, then lateness (``t < newest - within``), then count;
   counted times older than ``newest - within`` drop, so what is left spans at most ``within``
   (inclusive) and ``threshold`` of them fire. The count restarts after a firing.
2. Reactive with ``after`` (S5): an ``after`` event (also when it matches ``expect``) re-arms with a
   count of 0 and is never counted; ``expect`` events count in ``[armed_at, armed_at + within]``.
3. Proactive with ``after`` (S6): an ``after`` event arms ``[t, t + within)``; reaching ``threshold``
   in it disarms; a check at or after the deadline fires with the arming event.
4. Proactive without ``after`` (S6): the deadline is the first ``D >= max(armed_at + within, newest)``
   with fewer than ``threshold`` recorded events in ``(D - within, D]``; since ``D >= newest`` that is
   ``max(that bound, k-th newest + within)``, so only the ``threshold`` newest events are kept.
"""

from __future__ import annotations

from triggers.compiled import AFTER, EXPECT, EventPlan
from triggers.state import Record

__all__ = [
    "Fire",
    "due_of",
    "proactive_deadline",
    "proactive_event",
    "reactive_event",
    "reactive_resolve",
]

Fire = tuple[int, str | None, list[str]]


def _in_cooldown(plan: EventPlan, rec: Record, t: int) -> bool:
    last = rec.get("last_fire")
    return bool(plan.cooldown_us) and last is not None and t < last + plan.cooldown_us


def _fired(rec: Record, t: int, eid: str, counted: list[list]) -> Fire:
    last = rec.get("last_fire")
    rec["last_fire"] = t if last is None or t > last else last
    return t, eid, [c[2] for c in counted]


def reactive_event(plan: EventPlan, rec: Record, flags: int, t: int, pn: int, eid: str) -> Fire | None:
    """Apply one considered event to a reactive key (notes 1 and 2)."""
    within = plan.within_us
    if plan.after is not None:
        if flags & AFTER:
            rec["armed_at"] = t
            rec["counted"] = []
            return None
        armed_at = rec.get("armed_at")
        if _in_cooldown(plan, rec, t) or armed_at is None or t < armed_at:
            return None
        if within and t > armed_at + within:
            rec["armed_at"] = None
            rec["counted"] = []
            return None
        counted = rec.setdefault("counted", [])
        counted.append([t, pn, eid])
        if len(counted) < plan.threshold:
            return None
        rec["armed_at"] = None
        rec["counted"] = []
        return _fired(rec, t, eid, counted)

    if _in_cooldown(plan, rec, t):
        return None
    newest = rec.get("newest")
    if within and newest is not None and t < newest - within:
        return None
    counted = rec.get("counted")
    if counted is None:
        counted = rec["counted"] = []
    counted.append([t, pn, eid])
    if newest is None or t > newest:
        rec["newest"] = t
        if within and newest is not None:
            low = t - within
            if any(c[0] < low for c in counted):
                counted = rec["counted"] = [c for c in counted if c[0] >= low]
    if len(counted) < plan.threshold:
        return None
    rec["counted"] = []
    return _fired(rec, t, eid, counted)


def reactive_resolve(rec: Record, now: int) -> bool:
    """Clear a reactive key's pending resolution when it is due (S7)."""
    at = rec.get("resolve_at")
    if at is None or at > now:
        return False
    del rec["resolve_at"]
    return True


def _deadline(plan: EventPlan, rec: Record) -> int:
    recorded = rec["recorded"]
    within = plan.within_us
    bound = rec["armed_at"] + within
    if recorded:
        newest = recorded[-1][0]
        if newest > bound:
            bound = newest
        if len(recorded) >= plan.threshold and recorded[0][0] + within > bound:
            bound = recorded[0][0] + within
    return bound


def proactive_event(plan: EventPlan, rec: Record, flags: int, t: int, pn: int, eid: str) -> bool:
    """Apply one considered event to a proactive key (notes 3 and 4); True when it resolves a firing."""
    resolves = bool(flags & EXPECT) and bool(rec.get("open"))
    if plan.after is not None:
        if flags & AFTER:
            rec["armed_at"] = t
            rec["deadline"] = t + plan.within_us
            rec["count"] = 0
            rec["arming"] = eid
            rec["counted"] = []
        elif rec.get("armed_at") is not None and rec["armed_at"] <= t < rec["deadline"]:
            rec["count"] += 1
            rec["counted"].append(eid)
            if rec["count"] >= plan.threshold:
                _disarm(rec)
        return resolves

    if rec.get("armed_at") is None:
        rec["armed_at"] = t
        rec["recorded"] = [[t, pn, eid]]
    else:
        recorded = rec["recorded"]
        entry = [t, pn, eid]
        at = len(recorded)
        while at and recorded[at - 1][:2] > entry[:2]:
            at -= 1
        recorded.insert(at, entry)
        if len(recorded) > plan.threshold:
            del recorded[0]
    rec["deadline"] = _deadline(plan, rec)
    return resolves


def _disarm(rec: Record) -> None:
    for field in ("armed_at", "deadline", "count", "arming", "counted", "recorded"):
        rec.pop(field, None)


def proactive_deadline(plan: EventPlan, rec: Record, now: int) -> Fire | None:
    """Fire an armed proactive key whose deadline is at or before ``now``, and disarm it."""
    deadline = rec.get("deadline")
    if rec.get("armed_at") is None or deadline is None or deadline > now:
        return None
    if plan.after is not None:
        trigger = rec.get("arming")
        eids = [trigger, *rec.get("counted", [])] if trigger else list(rec.get("counted", []))
    else:
        recorded = rec.get("recorded") or []
        trigger = recorded[-1][2] if recorded else None
        eids = [r[2] for r in recorded]
    _disarm(rec)
    return deadline, trigger, eids


def due_of(plan: EventPlan, rec: Record) -> int | None:
    """When the record needs a tick: an armed proactive key's deadline, or a pending resolution."""
    if plan.proactive:
        return rec.get("deadline") if rec.get("armed_at") is not None else None
    return rec.get("resolve_at")
