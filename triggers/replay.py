"""Replay: evaluate an automation against stored event history, in a sandbox.

The automation runs in a fresh in-memory evaluator (its own state store and intake), so live state,
the outbox and the actions are never touched. Events are delivered in the order they were received,
each at its received time as the evaluator's ``now``, with a timer tick before each one and a last
tick at ``until``: deadlines fire where they would have fired live (to the resolution of the events).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field
from sqlalchemy import and_, or_, select

from events.model import Event
from triggers.evaluate import Evaluator
from triggers.intake import Intake
from triggers.models import Automation
from triggers.outcomes import Outcomes
from triggers.state import MemoryStateStore
from tripwire.db import Database
from tripwire.errors import ValidationFailed
from tripwire.tables import events

__all__ = ["ReplayFiring", "ReplayReport", "replay", "stored_events"]

PAGE = 1000


class ReplayFiring(BaseModel):
    """One firing or resolution the automation would have produced."""

    kind: str = Field(description="'triggered' or 'resolved'")
    time: datetime = Field(description="when it would have fired or resolved")
    trigger_path: str = Field(description="which trigger (path in a composite)")
    labels: dict[str, str] = Field(description="the for_each key")
    event_id: UUID | None = Field(description="the triggering (or resolving) event")
    event_ids: list[UUID] = Field(default_factory=list, description="every event of the firing")


class ReplayReport(BaseModel):
    """What an automation would have done over a stretch of history."""

    automation: str
    since: datetime
    until: datetime
    events_scanned: int
    fired: int
    resolved: int
    firings: list[ReplayFiring]


async def stored_events(db: Database, since: datetime, until: datetime) -> AsyncIterator[Event]:
    """Stored events received in [since, until], oldest first (keyset pages of ``PAGE``)."""
    from events.history import _event  # the row -> Event mapping of the history queries

    received = events.c.received
    after: tuple[datetime, UUID] | None = None
    while True:
        stmt = select(events).where(received >= since, received <= until)
        if after is not None:
            stmt = stmt.where(or_(received > after[0], and_(received == after[0], events.c.id > after[1])))
        stmt = stmt.order_by(received, events.c.id).limit(PAGE)
        async with db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        for row in rows:
            yield _event(row)
        if len(rows) < PAGE:
            return
        after = (rows[-1].received, rows[-1].id)


async def replay(db: Database, automation: Automation, since: datetime, until: datetime) -> ReplayReport:
    """Evaluate ``automation`` against the events received in [since, until] (see the module note)."""
    if until < since:
        raise ValidationFailed([("since", "must be before until")])
    automation = automation.model_copy(update={"enabled": True})
    evaluator = Evaluator(MemoryStateStore(), intake=Intake())
    evaluator.add(automation)
    evaluator.enable(automation.id, since)
    found: list[ReplayFiring] = []
    scanned = 0
    async for event in stored_events(db, since, until):
        scanned += 1
        wall = event.received or event.occurred
        _collect(evaluator.tick(wall), found)
        _collect(evaluator.handle_event(event, wall), found)
    _collect(evaluator.tick(until), found)
    return ReplayReport(
        automation=automation.name,
        since=since,
        until=until,
        events_scanned=scanned,
        fired=sum(f.kind == "triggered" for f in found),
        resolved=sum(f.kind == "resolved" for f in found),
        firings=found,
    )


def _collect(outcomes: Outcomes, found: list[ReplayFiring]) -> None:
    for f in outcomes.firings:
        found.append(
            ReplayFiring(
                kind="triggered",
                time=f.fire_time,
                trigger_path=f.trigger_path,
                labels=f.labels,
                event_id=f.event_id,
                event_ids=list(f.event_ids),
            )
        )
    for r in outcomes.resolutions:
        found.append(
            ReplayFiring(
                kind="resolved",
                time=r.resolve_time,
                trigger_path=r.trigger_path,
                labels=r.labels,
                event_id=r.event_id,
            )
        )
