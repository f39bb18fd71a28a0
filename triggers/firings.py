"""FiringStore: every firing and resolution of an automation, recorded in SQL and listed newest first.

1. ``record`` writes a batch in one transaction with ``INSERT ... ON CONFLICT (id) DO NOTHING``: the
   evaluator may record the same firing again after a redelivery, and nothing changes.
2. ``record_outbox`` takes the evaluator's firings-outbox messages as they are (``firing_row``): it is
   the ``FiringSink`` of ``triggers.outbox.OutboxService``.
3. ``list`` pages newest first by ``(occurred, id)``, served by ``ix_firings_automation_id_occurred_id``;
   the cursor is the last row's ``(occurred, id)``, so a page never repeats or skips a row that
   was there when the first page was read.
"""

from __future__ import annotations

import base64
import binascii
import builtins
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field
from sqlalchemy import and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from tripwire.db import Database
from tripwire.errors import ValidationFailed
from tripwire.tables import firings

__all__ = [
    "ActionDescriptor",
    "FiringPage",
    "FiringRow",
    "FiringStore",
    "decode_cursor",
    "encode_cursor",
    "firing_row",
]

MAX_PAGE = 1000


class ActionDescriptor(BaseModel):
    """One action of a firing: its index in the automation, its type, and what became of it."""

    index: int = Field(description="position in the automation's actions (or actions_on_resolve)")
    type: str = Field(description="the action's type, e.g. 'send-notification'")
    status: Literal["queued", "would have run", "succeeded", "failed", "dead-lettered"] = Field(
        description="'queued' for the action runner ('would have run' in dry-run mode) until the runner "
        "reports 'succeeded', 'failed' (not retried) or 'dead-lettered' (retries exhausted)"
    )
    reason: str | None = Field(None, description="why it failed; never a secret")
    attempts: int | None = Field(None, description="attempts made by the run that finished it")
    finished: datetime | None = Field(None, description="when the action ended")


class FiringRow(BaseModel):
    """A recorded firing (kind 'triggered') or resolution (kind 'resolved')."""

    id: UUID = Field(description="the firing id; recording is idempotent by it")
    automation_id: UUID = Field(description="the automation that fired")
    kind: Literal["triggered", "resolved"] = Field(description="fired, or the condition cleared")
    trigger_path: str = Field("", description="which trigger fired: '' for the top, '0.1' for a child")
    labels: dict[str, str] = Field(default_factory=dict, description="the for_each key's labels")
    event_id: UUID | None = Field(None, description="the triggering event (none for a proactive deadline)")
    event_ids: list[UUID] = Field(default_factory=list, description="every event of the firing")
    occurred: datetime = Field(description="when it fired or resolved")
    mode: Literal["live", "dry-run"] = Field("live", description="the automation's mode at the time")
    actions: list[ActionDescriptor] = Field(default_factory=list, description="the actions it started")
    recorded_at: datetime = Field(
        default_factory=lambda: datetime.now(UTC), description="when the firing was stored"
    )


class FiringPage(BaseModel):
    """One page of firings, newest first."""

    firings: list[FiringRow]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null on the last")


def encode_cursor(occurred: datetime, firing_id: UUID) -> str:
    """An opaque cursor for the page after the row ``(occurred, firing_id)``."""
    raw = f"{occurred.astimezone(UTC).isoformat()}|{firing_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The ``(occurred, id)`` of a cursor; ValidationFailed naming 'cursor' when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        occurred_text, _, id_text = raw.partition("|")
        occurred = datetime.fromisoformat(occurred_text)
        if occurred.tzinfo is None:
            raise ValueError("naive time")
        return occurred, UUID(id_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed(
            [("cursor", "is not a cursor from this API; pass next_cursor of the previous page")]
        ) from None


def _row(firing: FiringRow) -> dict[str, Any]:
    data = firing.model_dump(
        mode="json", exclude={"id", "automation_id", "event_id", "occurred", "recorded_at"}
    )
    # outcomes (reason, attempts, finished) are joined in when read, not stored with the firing
    data["actions"] = [a.model_dump(mode="json", exclude_none=True) for a in firing.actions]
    return {
        **data,
        "id": firing.id,
        "automation_id": firing.automation_id,
        "event_id": firing.event_id,
        "occurred": firing.occurred,
        "recorded_at": firing.recorded_at,
    }


def firing_row(doc: dict[str, Any]) -> FiringRow:
    """The row of a firings-outbox message (``triggers.outbox.outbox_message``)."""
    return FiringRow(
        id=doc["id"],
        automation_id=doc["automation_id"],
        kind=doc["kind"],
        trigger_path=doc.get("trigger_path") or "",
        labels=doc.get("labels") or {},
        event_id=doc.get("event_id"),
        event_ids=doc.get("event_ids") or [],
        occurred=doc["time"],
        mode=doc.get("mode", "live"),
        actions=[
            ActionDescriptor(index=a["index"], type=a["action"]["type"], status=a["status"])
            for a in doc.get("actions", [])
        ],
    )


class FiringStore:
    """Records firings (idempotently by id) and lists an automation's firings, newest first."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _insert(self) -> Insert:
        dialect = self._db.dialect
        if dialect == "postgresql":
            return postgresql.insert(firings).on_conflict_do_nothing(index_elements=["id"])
        if dialect == "sqlite":
            return sqlite.insert(firings).on_conflict_do_nothing(index_elements=["id"])
        raise RuntimeError(f"the firing store does not support the {dialect} dialect")  # pragma: no cover

    async def record(self, rows: Sequence[FiringRow]) -> int:
        """Store the firings in one transaction; returns how many were new (repeated ids are skipped)."""
        unique = {f.id: f for f in reversed(rows)}  # the first of repeated ids wins
        if not unique:
            return 0
        async with self._db.begin() as conn:
            result = await conn.execute(
                self._insert().returning(firings.c.id), [_row(f) for f in unique.values()]
            )
            return len(result.all())

    async def record_outbox(self, docs: Sequence[dict[str, Any]]) -> int:
        """Record firings-outbox messages (the ``FiringSink`` of ``triggers.outbox.OutboxService``)."""
        return await self.record([firing_row(d) for d in docs])

    async def list(self, automation_id: UUID, limit: int = 50, cursor: str | None = None) -> FiringPage:
        """One page of the automation's firings, newest first; ``cursor`` is a previous page's next_cursor."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed([("limit", f"must be from 1 to {MAX_PAGE}, not {limit}")])
        query = select(firings).where(firings.c.automation_id == automation_id)
        if cursor is not None:
            occurred, last_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    firings.c.occurred < occurred,
                    and_(firings.c.occurred == occurred, firings.c.id < last_id),
                )
            )
        query = query.order_by(firings.c.occurred.desc(), firings.c.id.desc()).limit(limit + 1)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        page: builtins.list[FiringRow] = [FiringRow.model_validate(row._asdict()) for row in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor(page[-1].occurred, page[-1].id) if more else None
        return FiringPage(firings=page, next_cursor=next_cursor)
