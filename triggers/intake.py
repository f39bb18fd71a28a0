"""Event intake before evaluation (conformance S3): duplicates, clock skew and ``follows`` holding.

Pure: every method takes ``now``; nothing reads a clock.

1. Duplicates: an id already delivered (processed or held) is ignored. Ids are remembered for
   ``dedup_horizon_s`` of delivery time (bounded memory), held ones for as long as they are held.
2. Skew: an event occurring more than ``max_future_skew_s`` after its received time counts as
   occurring when received (its *effective occurred* time, used by every rule).
3. ``follows``: an event whose predecessor has not been processed is held, unless its wait is over
   (``now >= occurred + follows_wait_s``). Processing an event releases its held followers right
   after it, by (occurred, delivery order), each followed by its own; a tick releases held events
   whose wait is over, in the same order.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from uuid import UUID

from events.model import Event
from triggers.outcomes import to_us

__all__ = ["Intake", "Ready"]

Ready = tuple[Event, int]
"""An event to evaluate now, with its effective occurred time in µs since the epoch."""


class _Held:
    __slots__ = ("event", "order", "t")

    def __init__(self, event: Event, t: int, order: int) -> None:
        self.event = event
        self.t = t
        self.order = order


def _order(held: _Held) -> tuple[int, int]:
    return held.t, held.order


class Intake:
    """Decides which delivered events are evaluated now, and in which order."""

    def __init__(
        self,
        *,
        dedup_horizon_s: float = 3600.0,
        max_future_skew_s: float = 60.0,
        follows_wait_s: float = 900.0,
    ) -> None:
        self._horizon_us = round(dedup_horizon_s * 1_000_000)
        self._skew_us = round(max_future_skew_s * 1_000_000)
        self._wait_us = round(follows_wait_s * 1_000_000)
        self._processed: dict[UUID, int] = {}
        self._processed_order: deque[tuple[int, UUID]] = deque()
        self._held: dict[UUID, _Held] = {}
        self._waiting: dict[UUID, list[_Held]] = {}
        self._deliveries = 0

    @property
    def held(self) -> list[Event]:
        """Events held for their predecessor, oldest first."""
        return [h.event for h in sorted(self._held.values(), key=_order)]

    def effective_occurred_us(self, event: Event, now_us: int) -> int:
        """``occurred``, or the received time when ``occurred`` is too far ahead of it (µs)."""
        occurred = to_us(event.occurred)
        received = now_us if event.received is None else to_us(event.received)
        return received if occurred - received > self._skew_us else occurred

    def accept(self, event: Event, now: datetime) -> list[Ready]:
        """A delivered event: what to evaluate now (nothing for a duplicate or a held event)."""
        now_us = to_us(now)
        self._forget(now_us)
        eid = event.id
        if eid in self._processed or eid in self._held:
            return []
        t = self.effective_occurred_us(event, now_us)
        self._deliveries += 1
        follows = event.follows
        if (
            follows is not None
            and follows != eid
            and follows not in self._processed
            and now_us < t + self._wait_us
        ):
            held = _Held(event, t, self._deliveries)
            self._held[eid] = held
            self._waiting.setdefault(follows, []).append(held)
            return []
        return self._ready(event, t, now_us)

    def release(self, now: datetime) -> list[Ready]:
        """At a tick: held events whose wait is over (each followed by its own followers)."""
        now_us = to_us(now)
        self._forget(now_us)
        if not self._held:
            return []
        due = sorted((h for h in self._held.values() if h.t + self._wait_us <= now_us), key=_order)
        out: list[Ready] = []
        for held in due:
            if held.event.id not in self._held:
                continue  # already released as a follower of an earlier one
            self._unhold(held)
            out.extend(self._ready(held.event, held.t, now_us))
        return out

    def followers(self, event_id: UUID) -> list[Event]:
        """Held events that processing ``event_id`` would release (transitively), without releasing."""
        out: list[Event] = []
        seen = {event_id}  # `follows` may form a cycle: visit each event once
        stack = sorted(self._waiting.get(event_id, ()), key=_order, reverse=True)
        while stack:
            held = stack.pop()
            if held.event.id in seen:
                continue
            seen.add(held.event.id)
            out.append(held.event)
            stack.extend(sorted(self._waiting.get(held.event.id, ()), key=_order, reverse=True))
        return out

    def releasable(self, now: datetime) -> list[Event]:
        """Held events a tick at ``now`` would release (with their followers), without releasing."""
        now_us = to_us(now)
        out: list[Event] = []
        for held in sorted(self._held.values(), key=_order):
            if held.t + self._wait_us <= now_us:
                out.append(held.event)
                out.extend(self.followers(held.event.id))
        return list({e.id: e for e in out}.values())

    def is_processed(self, event_id: UUID) -> bool:
        """Whether an event id was processed (within the remembered horizon)."""
        return event_id in self._processed

    def _ready(self, event: Event, t: int, now_us: int) -> list[Ready]:
        if event.id not in self._waiting:  # the common case: nobody waits for it
            self._processed[event.id] = now_us
            self._processed_order.append((now_us, event.id))
            return [(event, t)]
        out: list[Ready] = []
        stack: list[tuple[Event, int]] = [(event, t)]
        while stack:
            current, current_t = stack.pop()
            self._processed[current.id] = now_us
            self._processed_order.append((now_us, current.id))
            out.append((current, current_t))
            followers = self._waiting.pop(current.id, None)
            if followers:
                followers.sort(key=_order)
                for held in reversed(followers):
                    del self._held[held.event.id]
                    stack.append((held.event, held.t))
        return out

    def _unhold(self, held: _Held) -> None:
        del self._held[held.event.id]
        follows = held.event.follows
        siblings = self._waiting.get(follows) if follows is not None else None
        if siblings is not None:
            siblings.remove(held)
            if not siblings:
                del self._waiting[follows]  # type: ignore[arg-type]

    def _forget(self, now_us: int) -> None:
        order, processed = self._processed_order, self._processed
        limit = now_us - self._horizon_us
        while order and order[0][0] < limit:
            at, eid = order.popleft()
            if processed.get(eid) == at:
                del processed[eid]
