"""ActionResultStore: what each action of a firing did, in SQL next to the firing (table ``action_results``).

One row per action message, keyed by its idempotency key (``<firing id>:<kind>:<index>``). The runner
writes it when the action ends — succeeded, failed (``ActionFailed``) or dead-lettered — with an upsert:
a message run again after a crash (at-least-once, see ``actions.runner``) overwrites the row with the
later outcome instead of adding a second one.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from tripwire.db import Database
from tripwire.tables import action_results

__all__ = ["ActionResult", "ActionResultStore", "ActionStatus"]

ActionStatus = Literal["succeeded", "failed", "dead-lettered"]

_UPDATED = ("status", "attempts", "reason", "detail", "finished", "action_type")


class ActionResult(BaseModel):
    """The outcome of one action of a firing."""

    idempotency_key: str = Field(description="'<firing id>:<kind>:<index>': the action message's key")
    firing_id: UUID = Field(description="the firing (or resolution) that started the action")
    automation_id: UUID = Field(description="the automation")
    kind: Literal["triggered", "resolved"] = Field(description="whether it ran on a firing or a resolution")
    index: int = Field(description="position in the firing's actions")
    type: str = Field(description="the action's type, e.g. 'send-notification'")
    status: ActionStatus = Field(description="'succeeded', 'failed' (not retried) or 'dead-lettered'")
    attempts: int = Field(description="attempts made by the run that finished it")
    reason: str | None = Field(None, description="why it failed; never a secret")
    detail: dict[str, Any] = Field(default_factory=dict, description="what it did, e.g. {'status_code': 200}")
    finished: datetime = Field(description="when it ended")


def _row(result: ActionResult) -> dict[str, Any]:
    return {
        "idempotency_key": result.idempotency_key,
        "firing_id": result.firing_id,
        "automation_id": result.automation_id,
        "kind": result.kind,
        "action_index": result.index,
        "action_type": result.type,
        "status": result.status,
        "attempts": result.attempts,
        "reason": result.reason,
        "detail": result.detail,
        "finished": result.finished,
    }


def _result(row: Any) -> ActionResult:
    return ActionResult(
        idempotency_key=row.idempotency_key,
        firing_id=row.firing_id,
        automation_id=row.automation_id,
        kind=row.kind,
        index=row.action_index,
        type=row.action_type,
        status=row.status,
        attempts=row.attempts,
        reason=row.reason,
        detail=row.detail or {},
        finished=row.finished,
    )


class ActionResultStore:
    """Records action results (upsert by idempotency key) and reads them by firing."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, result: ActionResult) -> None:
        """Store the result; a later result for the same key replaces the earlier one."""
        await self.record_many([result])

    async def record_many(self, results: Sequence[ActionResult]) -> None:
        """Store results in one transaction (the last of repeated keys wins)."""
        unique = {r.idempotency_key: r for r in results}
        if not unique:
            return
        dialect = self._db.dialect
        statement: Any
        if dialect == "postgresql":
            pg = postgresql.insert(action_results)
            statement = pg.on_conflict_do_update(
                index_elements=["idempotency_key"], set_={name: pg.excluded[name] for name in _UPDATED}
            )
        elif dialect == "sqlite":
            lite = sqlite.insert(action_results)
            statement = lite.on_conflict_do_update(
                index_elements=["idempotency_key"], set_={name: lite.excluded[name] for name in _UPDATED}
            )
        else:  # pragma: no cover
            raise RuntimeError(f"the action result store does not support the {dialect} dialect")
        async with self._db.begin() as conn:
            await conn.execute(statement, [_row(r) for r in unique.values()])

    async def get(self, idempotency_key: str) -> ActionResult | None:
        """The result of one action message, or None while it has not ended."""
        query = select(action_results).where(action_results.c.idempotency_key == idempotency_key)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _result(row)

    async def for_firings(self, firing_ids: Sequence[UUID]) -> dict[UUID, builtins.list[ActionResult]]:
        """The results of each firing, by action index (firings without results are left out)."""
        if not firing_ids:
            return {}
        query = (
            select(action_results)
            .where(action_results.c.firing_id.in_(list(firing_ids)))
            .order_by(action_results.c.firing_id, action_results.c.kind, action_results.c.action_index)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        out: dict[UUID, builtins.list[ActionResult]] = {}
        for row in rows:
            out.setdefault(row.firing_id, []).append(_result(row))
        return out

    async def list(self, automation_id: UUID, limit: int = 100) -> builtins.list[ActionResult]:
        """The automation's latest results, newest first."""
        query = (
            select(action_results)
            .where(action_results.c.automation_id == automation_id)
            .order_by(action_results.c.finished.desc(), action_results.c.idempotency_key)
            .limit(limit)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_result(row) for row in rows]
