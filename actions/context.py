"""What an action sees: the message it came from, its template variables, and the parts it may use.

Template variables (DESIGN.md §5):

| name | value |
|---|---|
| ``automation`` | ``{id, name, description, tags, enabled}`` (only id and name once it is deleted) |
| ``event`` | the event as a JSON dict — see below — or None |
| ``events`` | every event of the firing found in history (the newest ``MAX_CONTEXT_EVENTS``), oldest first |
| ``labels`` | the ``for_each`` key's labels |
| ``firing`` | ``{id, kind, time, trigger_path, automation_id, event_id, event_ids}`` |

``event`` is the triggering event for ``actions`` (for a proactive deadline, the event that armed the
key — e.g. the ``after`` event — or None when no event was seen for it). ``actions_on_trigger`` and
``actions_on_resolve`` get the automation's own ``tripwire.automation.triggered`` / ``resolved`` event
instead (its payload holds the firing id, labels, event ids and trigger path), as the issue asks; which
list an action belongs to is read from the stored automation (its index against ``len(actions)``), so
editing the lists between the firing and the run can shift that. The lifecycle event is rebuilt from the
recorded firing with the same id the firings relay gave it (``triggers.outbox.lifecycle_event``), so it
need not be in history yet.

Events are read from the history the recorder writes, which runs beside the evaluator and may lag a
little behind it: a missing event is waited for up to ``actions.event_wait_s``, then left out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from actions.templates import TemplateEngine, TemplateRenderError
from blocks.base import Block
from events.emit import EventEmitter
from events.model import Event
from tripwire.db import Database
from tripwire.errors import ActionFailed, NotFound
from tripwire.tables import events as events_table
from tripwire.tables import firings as firings_table

if TYPE_CHECKING:
    from blocks.store import BlockStore
    from triggers.store import AutomationStore, StoredAutomation

__all__ = [
    "MAX_CONTEXT_EVENTS",
    "ActionContext",
    "ActionMessage",
    "BatchMemo",
    "TemplateVariables",
    "fetch_events",
    "template_variables",
]

T = TypeVar("T")

MAX_CONTEXT_EVENTS = 100
POLL_S = 0.05


class ActionMessage(BaseModel):
    """One entry of the actions stream (``triggers.outbox.action_messages``)."""

    model_config = ConfigDict(extra="ignore")

    idempotency_key: str = Field(min_length=1, description="'<firing id>:<kind>:<index>'")
    firing_id: UUID
    kind: Literal["triggered", "resolved"]
    index: int
    action: dict[str, Any] = Field(description="the action document, with its 'type'")
    automation_id: UUID
    automation_name: str
    labels: dict[str, str] = Field(default_factory=dict)
    event_id: UUID | None = None
    event_ids: list[UUID] = Field(default_factory=list)
    time: datetime

    @property
    def action_type(self) -> str:
        """The action's type, or '?' when the document has none."""
        return str(self.action.get("type", "?"))


class BatchMemo:
    """Reads shared by the actions of one batch: each stored automation, firing row and block is read once
    (the actions of one firing need the same ones). A failed read is forgotten, so a retry reads again."""

    def __init__(self) -> None:
        self._reads: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """The value of ``read()`` for ``key``, read once per batch."""
        future = self._reads.get(key)
        if future is None:
            future = asyncio.ensure_future(read())
            self._reads[key] = future
        try:
            return await asyncio.shield(future)  # a cancelled reader does not cancel the others' read
        except Exception:
            if future.done() and self._reads.get(key) is future:
                del self._reads[key]
            raise


@dataclass
class TemplateVariables:
    """The variables of every template of one action, and the events they came from."""

    variables: dict[str, Any]
    triggering_event: Event | None
    event: Event | None


async def fetch_events(db: Database, ids: Sequence[UUID], wait_s: float) -> dict[UUID, Event]:
    """The events with these ids from history, waiting up to ``wait_s`` for missing ones."""
    wanted = list(dict.fromkeys(ids))
    found: dict[UUID, Event] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        missing = [i for i in wanted if i not in found]
        if not missing:
            return found
        query = select(
            events_table.c.id,
            events_table.c.occurred,
            events_table.c.received,
            events_table.c.event,
            events_table.c.resource,
            events_table.c.related,
            events_table.c.payload,
            events_table.c.follows,
        ).where(events_table.c.id.in_(missing))
        async with db.read() as conn:
            rows = (await conn.execute(query)).all()
        for row in rows:
            found[row.id] = Event.model_validate(dict(row._mapping))
        if len(found) == len(wanted) or loop.time() >= deadline:
            return found
        await asyncio.sleep(POLL_S)


async def _firing_row(db: Database, firing_id: UUID) -> Any:
    async with db.read() as conn:
        return (await conn.execute(select(firings_table).where(firings_table.c.id == firing_id))).first()


def _lifecycle_event(message: ActionMessage, row: Any) -> Event:
    from triggers.outbox import lifecycle_event

    doc = {
        "kind": message.kind,
        "id": str(message.firing_id),
        "automation_id": str(message.automation_id),
        "automation_name": message.automation_name,
        "mode": row.mode if row is not None else "live",
        "trigger_path": row.trigger_path if row is not None else "",
        "labels": message.labels,
        "event_id": None if message.event_id is None else str(message.event_id),
        "event_ids": [str(i) for i in message.event_ids],
        "time": message.time.isoformat(),
        "actions": [
            {"index": a["index"], "action": {"type": a["type"]}, "status": a["status"]}
            for a in (row.actions if row is not None else [])
        ],
    }
    return lifecycle_event(doc, row.recorded_at if row is not None else message.time)


async def template_variables(
    message: ActionMessage,
    *,
    db: Database,
    automations: AutomationStore,
    wait_s: float,
    memo: BatchMemo | None = None,
) -> TemplateVariables:
    """The template variables of the action of ``message`` (see the module note)."""
    memo = memo or BatchMemo()

    async def read_automation() -> StoredAutomation | None:
        try:
            return await automations.get(message.automation_id)
        except NotFound:
            return None

    stored = await memo.get(("automation", message.automation_id), read_automation)
    row = await memo.get(("firing", message.firing_id), lambda: _firing_row(db, message.firing_id))
    ids = message.event_ids[-MAX_CONTEXT_EVENTS:]
    wanted = [*ids, message.event_id] if message.event_id is not None else ids
    found = await fetch_events(db, wanted, wait_s) if wanted else {}
    triggering = found.get(message.event_id) if message.event_id is not None else None
    lifecycle = message.kind == "resolved" or (
        stored is not None and message.index >= len(stored.automation.actions)
    )
    event = _lifecycle_event(message, row) if lifecycle else triggering
    automation: dict[str, Any] = {"id": str(message.automation_id), "name": message.automation_name}
    if stored is not None:
        automation.update(
            description=stored.automation.description,
            tags=list(stored.automation.tags),
            enabled=stored.automation.enabled,
        )
    variables = {
        "automation": automation,
        "event": None if event is None else event.model_dump(mode="json"),
        "events": [found[i].model_dump(mode="json") for i in ids if i in found],
        "labels": dict(message.labels),
        "firing": {
            "id": str(message.firing_id),
            "kind": message.kind,
            "time": message.time.isoformat(),
            "trigger_path": row.trigger_path if row is not None else "",
            "automation_id": str(message.automation_id),
            "event_id": None if message.event_id is None else str(message.event_id),
            "event_ids": [str(i) for i in message.event_ids],
        },
    }
    return TemplateVariables(variables=variables, triggering_event=triggering, event=event)


@dataclass
class ActionContext:
    """Everything one run of one action uses; performers get it with their action model."""

    message: ActionMessage
    template: TemplateVariables
    engine: TemplateEngine
    blocks: BlockStore
    automations: AutomationStore
    emitter: EventEmitter
    http: httpx.AsyncClient
    clock: Callable[[], datetime]
    memo: BatchMemo = field(default_factory=BatchMemo)
    db: Database | None = None
    """the database, for the actions on orchestration objects (deployments, flow runs)"""
    _blocks_used: list[Block] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The idempotency key of the message."""
        return self.message.idempotency_key

    async def block(self, ref: str) -> Block:
        """The block ``ref`` ('type/name'); ActionFailed when it does not exist or cannot be read."""
        from tripwire.errors import ConfigurationError, ValidationFailed

        try:
            block = await self.memo.get(("block", ref), lambda: self.blocks.get(ref))
        except NotFound:
            raise ActionFailed(f"block {ref!r} not found (`tripwire block ls` lists the blocks)") from None
        except (ConfigurationError, ValidationFailed) as exc:  # e.g. it cannot be decrypted with our key
            reason = str(exc) if ref in str(exc) else f"block {ref!r} cannot be used: {exc}"
            raise ActionFailed(reason) from None
        self._blocks_used.append(block)
        return block

    def scrub(self, text: str) -> str:
        """``text`` with every secret of the blocks this action used replaced by the mask."""
        for block in self._blocks_used:
            text = block.scrub(text)
        return text

    async def render(self, where: str, source: str) -> str:
        """Render one template; ActionFailed naming the field when it fails."""
        try:
            return await self.engine.render(source, self.template.variables)
        except TemplateRenderError as exc:
            raise ActionFailed(f"template error in {where}: {exc}{self._hint(exc)}") from None

    def _hint(self, exc: TemplateRenderError) -> str:
        if self.template.event is not None or "'None' has no attribute" not in str(exc):
            return ""
        if self.message.event_id is None:
            return " (`event` is None: no event caused this firing, e.g. a proactive deadline)"
        missing = self.message.event_id
        return f" (`event` is None: event {missing} is not in the history; is the recorder running?)"

    async def render_json(self, where: str, value: Any) -> Any:
        """A JSON template: a string is rendered and parsed (text stays text), a dict/list leaf by leaf."""
        if isinstance(value, str):
            text = await self.render(where, value)
            try:
                return json.loads(text)
            except ValueError:
                return text
        return await self._render_leaves(where, value)

    async def _render_leaves(self, where: str, value: Any) -> Any:
        if isinstance(value, str):
            return await self.render(where, value)
        if isinstance(value, dict):
            return {k: await self._render_leaves(f"{where}.{k}", v) for k, v in value.items()}
        if isinstance(value, list):
            return [await self._render_leaves(f"{where}[{i}]", v) for i, v in enumerate(value)]
        return value
