"""The firings outbox: what happens after the evaluator committed a firing or a resolution.

The evaluator appends each firing/resolution to the outbox stream in the same atomic commit as the
state that caused it (``triggers.redis_state`` note 4). ``OutboxService`` consumes that stream and, per
message: records it in SQL, emits ``tripwire.automation.triggered`` / ``resolved`` onto the event stream,
and (live mode only) publishes one message per action onto the actions stream. All three are idempotent
— the SQL row and the lifecycle event by ids derived from the firing id, the action messages by their
idempotency key (firing id, kind, action index) checked by the action runner — so a redelivered outbox
message changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson

from events.codec import decode_event
from events.model import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE, Event, now_utc
from events.ports import Bus, StreamEntry
from triggers.models import Action, Automation
from triggers.outcomes import Firing, Resolution
from tripwire.services import ServiceState
from tripwire.settings import Settings

__all__ = [
    "RESOLVED",
    "TRIGGERED",
    "FiringSink",
    "OutboxService",
    "OutboxTemplate",
    "action_messages",
    "lifecycle_event",
    "lifecycle_json",
    "outbox_message",
]

logger = logging.getLogger(__name__)

TRIGGERED = "triggered"
RESOLVED = "resolved"
GROUP = "firings"


class OutboxTemplate:
    """What an automation's outbox messages share: built once per automation, not once per firing."""

    __slots__ = ("automation_id", "mode", "name", "on_resolve", "on_trigger")

    def __init__(self, automation: Automation) -> None:
        status = "queued" if automation.mode == "live" else "would have run"
        self.automation_id = str(automation.id)
        self.name = automation.name
        self.mode = automation.mode
        self.on_trigger = _actions([*automation.actions, *automation.actions_on_trigger], status)
        self.on_resolve = _actions(automation.actions_on_resolve, status)

    def message(self, outcome: Firing | Resolution) -> bytes:
        """The outbox entry of a firing or resolution: self-contained, with the actions to run."""
        if isinstance(outcome, Firing):
            kind, time, actions = TRIGGERED, outcome.fire_time, self.on_trigger
            extra: dict[str, Any] = {"event_ids": [str(e) for e in outcome.event_ids]}
        else:
            kind, time, actions = RESOLVED, outcome.resolve_time, self.on_resolve
            extra = {
                "event_ids": [] if outcome.event_id is None else [str(outcome.event_id)],
                "firing_id": None if outcome.firing_id is None else str(outcome.firing_id),
                "firings": outcome.firings,
            }
        doc = {
            "kind": kind,
            "id": str(outcome.id),
            "automation_id": self.automation_id,
            "automation_name": self.name,
            "mode": self.mode,
            "trigger_path": outcome.trigger_path,
            "labels": outcome.labels,
            "event_id": None if outcome.event_id is None else str(outcome.event_id),
            "time": time.isoformat(),
            "actions": actions,
            **extra,
        }
        return orjson.dumps(doc)


def _actions(actions: Sequence[Action], status: str) -> list[dict[str, Any]]:
    return [
        {"index": i, "action": a.model_dump(mode="json"), "status": status} for i, a in enumerate(actions)
    ]


def outbox_message(automation: Automation, outcome: Firing | Resolution) -> bytes:
    """The outbox entry of a firing or resolution (``OutboxTemplate`` when there are many)."""
    return OutboxTemplate(automation).message(outcome)


def lifecycle_json(doc: dict[str, Any], received: str) -> bytes:
    """The stream body of the lifecycle event of an outbox message (``received``: ISO 8601).

    Written as JSON directly, not through the Event model: the relay emits one per firing, and the
    model would validate what this function alone builds. ``lifecycle_event`` reads it back.
    """
    related = []
    if doc.get("event_id"):
        related.append({RESOURCE_ID: f"tripwire.event.{doc['event_id']}", RESOURCE_ROLE: "triggering-event"})
    event = {
        "id": str(uuid5(NAMESPACE_URL, f"tripwire:{doc['kind']}:{doc['id']}")),
        "occurred": doc["time"],
        "event": f"tripwire.automation.{doc['kind']}",
        "resource": {
            RESOURCE_ID: f"tripwire.automation.{doc['automation_id']}",
            RESOURCE_NAME: doc["automation_name"],
        },
        "related": related,
        "payload": {
            "firing_id": doc["id"],
            "trigger_path": doc["trigger_path"],
            "labels": doc["labels"],
            "event_ids": doc["event_ids"],
            "mode": doc["mode"],
            "actions": [
                {"index": a["index"], "type": a["action"]["type"], "status": a["status"]}
                for a in doc["actions"]
            ],
        },
        "follows": None,
        "received": received,
    }
    return orjson.dumps(event)


def lifecycle_event(doc: dict[str, Any], received: datetime) -> Event:
    """``tripwire.automation.triggered`` / ``resolved`` for an outbox message, with a derived id."""
    return decode_event(lifecycle_json(doc, received.isoformat()))


def action_messages(doc: dict[str, Any]) -> list[bytes]:
    """One actions-stream message per action of a live firing, each with its idempotency key."""
    if doc["mode"] != "live":
        return []
    out = []
    for a in doc["actions"]:
        msg = {
            "idempotency_key": f"{doc['id']}:{doc['kind']}:{a['index']}",
            "firing_id": doc["id"],
            "kind": doc["kind"],
            "index": a["index"],
            "action": a["action"],
            "automation_id": doc["automation_id"],
            "automation_name": doc["automation_name"],
            "labels": doc["labels"],
            "event_id": doc["event_id"],
            "event_ids": doc["event_ids"],
            "time": doc["time"],
        }
        out.append(orjson.dumps(msg))
    return out


class FiringSink(Protocol):
    """Where firings are recorded (SQL in production)."""

    async def record_outbox(self, docs: list[dict[str, Any]]) -> int: ...


class OutboxService:
    """Consumes the firings outbox: record, announce, and queue the actions (see the module note)."""

    name = "firings"

    def __init__(
        self,
        *,
        bus: Bus,
        settings: Settings,
        sink: FiringSink,
        consumer: str,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.bus = bus
        self.streams = settings.streams
        self.sink = sink
        self.clock = clock
        self.outbox = self.streams.key("firings")
        self._consumer = bus.consumer(self.outbox, GROUP, consumer, self._on_entries)
        self._state = ServiceState.CREATED

    @property
    def state(self) -> ServiceState:
        return self._state

    async def start(self) -> None:
        await self.bus.ensure_group(self.outbox, GROUP)
        await self.bus.ensure_group(self.streams.actions, "actions")
        await self._consumer.start()
        self._state = ServiceState.RUNNING

    async def stop(self) -> None:
        self._state = ServiceState.STOPPING
        await self._consumer.stop()
        self._state = ServiceState.STOPPED

    async def _on_entries(self, entries: list[StreamEntry]) -> None:
        docs = []
        for entry in entries:
            try:
                docs.append(orjson.loads(entry.data))
            except ValueError:
                logger.error("skipped an outbox entry that is not JSON", extra={"entry_id": entry.id})
        if not docs:
            return
        await self.sink.record_outbox(docs)
        received = self.clock().isoformat()
        await self.bus.publish(self.streams.events, [lifecycle_json(d, received) for d in docs])
        actions = [m for d in docs for m in action_messages(d)]
        if actions:
            await self.bus.publish(self.streams.actions, actions)


def firing_id_of(doc: dict[str, Any]) -> UUID:
    """The firing (or resolution) id of an outbox message."""
    return UUID(doc["id"])
