"""AutomationStore: automations as stored, managed objects in SQL, with a change counter in Redis.

1. A row holds the automation's JSON document (``Automation.model_dump(mode="json")``) plus ``name``,
   ``enabled`` and ``id`` as columns, ``created``/``updated`` times and a ``version`` that starts at 1
   and grows by one on every change. ``enabled`` lives in both the column and the document, kept equal.
2. ``apply`` is create-or-update by name and idempotent: the same document again changes nothing
   (status "unchanged", no version bump). An existing automation keeps its stored id; an ``id`` or
   ``enabled`` the applied automation did not set explicitly (``model_fields_set``) keeps the stored
   value, so re-applying a file does not resume an automation someone paused.
3. Writes run in one transaction (``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on
   PostgreSQL), so concurrent appliers neither lose a version nor both create; a create that loses a
   race on the unique name is retried once as an update.
4. After every committed change the Redis counter ``streams.key("automations", "version")`` is
   incremented. Evaluators poll it with one cheap GET (``changes_version``) and reload
   (``enabled_automations``, or ``load_enabled``) when it moved: the store is the evaluator service's
   ``AutomationSource``. An enabled automation's "definition took effect" time is its ``updated``.
   The counter moves after the commit, so a reload always sees the change; if Redis fails in between,
   the error is raised and the next change (or a periodic reload) catches up.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

import redis.asyncio as aioredis
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from triggers.models import Automation
from tripwire.changes import ChangeCounter
from tripwire.db import Database
from tripwire.errors import NotFound, ValidationFailed
from tripwire.settings import StreamSettings
from tripwire.tables import action_results, automations, firings

__all__ = ["ApplyResult", "ApplyStatus", "AutomationStore", "StoredAutomation"]

log = logging.getLogger(__name__)

ApplyStatus = Literal["created", "updated", "unchanged"]


class StoredAutomation(BaseModel):
    """An automation as stored: its document plus the store's bookkeeping."""

    automation: Automation = Field(description="the automation document")
    version: int = Field(description="1 when created, +1 on every change")
    created: datetime = Field(description="when it was created")
    updated: datetime = Field(description="when it last changed")

    @property
    def id(self) -> UUID:
        return self.automation.id

    @property
    def name(self) -> str:
        return self.automation.name

    @property
    def enabled(self) -> bool:
        return self.automation.enabled


class ApplyResult(BaseModel):
    """What ``apply`` did: created, updated or left unchanged, and the stored automation."""

    status: ApplyStatus
    stored: StoredAutomation


def _document(automation: Automation) -> dict[str, Any]:
    return automation.model_dump(mode="json")


def _stored(row: Any) -> StoredAutomation:
    return StoredAutomation(
        automation=Automation.model_validate(row.document),
        version=row.version,
        created=row.created,
        updated=row.updated,
    )


def _parse_id(ref: str | UUID) -> UUID | None:
    if isinstance(ref, UUID):
        return ref
    try:
        return UUID(ref)
    except ValueError:
        return None


class _NameTaken(ValidationFailed):
    """The name is taken: for ``create`` an error, for ``apply`` a lost race to retry as an update."""


def _name_taken(name: str) -> ValidationFailed:
    message = f"an automation named {name!r} already exists; choose another name or apply it to update it"
    return _NameTaken([("name", message)])


class AutomationStore:
    """Create, apply, list, pause/resume and delete automations; bump the Redis change counter (note 4)."""

    def __init__(
        self,
        db: Database,
        redis: aioredis.Redis,
        streams: StreamSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._clock = clock
        self._changes = ChangeCounter(redis, streams.key("automations", "version"))
        self.version_key = self._changes.key

    # --- change counter ------------------------------------------------------------------------------

    async def changes_version(self) -> int:
        """The change counter (0 before the first change): poll it, reload when it moved."""
        return await self._changes.version()

    async def _changed(self) -> None:
        await self._changes.bump()

    # --- reads ---------------------------------------------------------------------------------------

    async def get(self, automation_id: UUID) -> StoredAutomation:
        """The automation with this id; NotFound otherwise."""
        async with self._db.read() as conn:
            row = (await conn.execute(select(automations).where(automations.c.id == automation_id))).first()
        if row is None:
            raise NotFound(f"no automation with id {automation_id}")
        return _stored(row)

    async def get_by_name(self, name: str) -> StoredAutomation:
        """The automation with this name; NotFound otherwise."""
        async with self._db.read() as conn:
            row = (await conn.execute(select(automations).where(automations.c.name == name))).first()
        if row is None:
            raise NotFound(f"no automation named {name!r} (`tripwire automation ls` lists them)")
        return _stored(row)

    async def resolve(self, name_or_id: str | UUID) -> StoredAutomation:
        """The automation with this id, else with this name; NotFound naming both tries."""
        automation_id = _parse_id(name_or_id)
        if automation_id is None:
            return await self.get_by_name(str(name_or_id))
        try:
            return await self.get(automation_id)
        except NotFound:
            if isinstance(name_or_id, UUID):
                raise
        try:
            return await self.get_by_name(str(name_or_id))
        except NotFound:
            raise NotFound(
                f"no automation with id or name {name_or_id!r} (`tripwire automation ls` lists them)"
            ) from None

    async def list(self) -> builtins.list[StoredAutomation]:
        """Every automation, by name."""
        async with self._db.read() as conn:
            rows = (await conn.execute(select(automations).order_by(automations.c.name))).all()
        return [_stored(row) for row in rows]

    async def load_enabled(self) -> builtins.list[Automation]:
        """The enabled automations, by name; a stored document that no longer validates is logged and
        skipped (it cannot be evaluated, and must not stop the others)."""
        return [automation for automation, _ in await self.enabled_automations()]

    async def enabled_automations(self) -> builtins.list[tuple[Automation, datetime]]:
        """Each enabled automation with the moment it was last enabled (``enabled_at``): the
        ``AutomationSource`` of the evaluator service. Invalid stored documents are skipped as in
        ``load_enabled``."""
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    select(
                        automations.c.id,
                        automations.c.name,
                        automations.c.document,
                        automations.c.updated,
                        automations.c.enabled_at,
                    )
                    .where(automations.c.enabled.is_(True))
                    .order_by(automations.c.name)
                )
            ).all()
        out = []
        for row in rows:
            try:
                out.append((Automation.model_validate(row.document), row.enabled_at or row.updated))
            except ValidationError as exc:
                log.error(
                    "automation %r (%s) is stored but no longer valid, skipped: %s",
                    row.name,
                    row.id,
                    str(exc).replace("\n", " "),
                    extra={"automation": str(row.id)},
                )
        return out

    # --- writes --------------------------------------------------------------------------------------

    async def create(self, automation: Automation) -> StoredAutomation:
        """Store a new automation; ValidationFailed naming 'name' (or 'id') when either is taken."""
        try:
            async with self._db.begin() as conn:
                stored = await self._insert(conn, automation)
        except IntegrityError:
            raise await self._conflict(automation) from None
        await self._changed()
        log.info("automation %r created", automation.name, extra={"automation": str(automation.id)})
        return stored

    async def _conflict(self, automation: Automation) -> ValidationFailed:
        async with self._db.read() as conn:
            by_name = (
                await conn.execute(select(automations.c.id).where(automations.c.name == automation.name))
            ).first()
        if by_name is not None:
            return _name_taken(automation.name)
        return ValidationFailed(
            [("id", f"{automation.id} is the id of another automation; leave id out to get a new one")]
        )

    async def _insert(self, conn: AsyncConnection, automation: Automation) -> StoredAutomation:
        existing = (
            await conn.execute(
                select(automations.c.name, automations.c.id).where(
                    (automations.c.name == automation.name) | (automations.c.id == automation.id)
                )
            )
        ).first()
        if existing is not None:
            if existing.name == automation.name:
                raise _name_taken(automation.name)
            taken = f"{automation.id} is the id of automation {existing.name!r}; leave id out"
            raise ValidationFailed([("id", taken)])
        now = self._clock()
        await conn.execute(
            automations.insert().values(
                id=automation.id,
                name=automation.name,
                enabled=automation.enabled,
                document=_document(automation),
                created=now,
                updated=now,
                version=1,
                enabled_at=now if automation.enabled else None,
            )
        )
        return StoredAutomation(automation=automation, version=1, created=now, updated=now)

    async def apply(self, automation: Automation) -> ApplyResult:
        """Create or update by name, idempotently (note 2); reports created, updated or unchanged."""
        [result] = await self._apply_all([automation], prefixed=False)
        return result

    async def apply_many(self, items: Sequence[Automation]) -> builtins.list[ApplyResult]:
        """Apply several automations in one transaction: all of them, or (on any error) none.

        Errors name ``automations[<index>].<field>``; a name given twice is refused.
        """
        first: dict[str, int] = {}
        duplicates = []
        for i, automation in enumerate(items):
            if automation.name in first:
                duplicates.append(
                    (
                        f"automations[{i}].name",
                        f"{automation.name!r} is also automations[{first[automation.name]}]",
                    )
                )
            first.setdefault(automation.name, i)
        if duplicates:
            raise ValidationFailed(duplicates)
        return await self._apply_all(items, prefixed=True)

    async def _apply_all(self, items: Sequence[Automation], *, prefixed: bool) -> builtins.list[ApplyResult]:
        results: builtins.list[ApplyResult] = []
        for attempt in range(2):
            try:
                async with self._db.begin() as conn:
                    results = [await self._apply_located(conn, a, i, prefixed) for i, a in enumerate(items)]
                break
            except (IntegrityError, _NameTaken) as exc:
                if attempt == 1:
                    if isinstance(exc, ValidationFailed):
                        raise
                    raise ValidationFailed(
                        [("name", "another writer changed these automations at the same moment; apply again")]
                    ) from None
                # another writer created the same name meanwhile (note 3): apply again as an update
        changed = [r for r in results if r.status != "unchanged"]
        if changed:
            await self._changed()
        for result in changed:
            log.info(
                "automation %r %s (version %d)",
                result.stored.name,
                result.status,
                result.stored.version,
                extra={"automation": str(result.stored.id)},
            )
        return results

    async def _apply_located(
        self, conn: AsyncConnection, automation: Automation, index: int, prefixed: bool
    ) -> ApplyResult:
        try:
            return await self._apply(conn, automation)
        except ValidationFailed as exc:
            if not prefixed:
                raise
            where = f"automations[{index}]"
            raise type(exc)([(f"{where}.{loc}" if loc else where, msg) for loc, msg in exc.errors]) from None

    async def _apply(self, conn: AsyncConnection, automation: Automation) -> ApplyResult:
        row = (
            await conn.execute(
                select(automations).where(automations.c.name == automation.name).with_for_update()
            )
        ).first()
        if row is None:
            return ApplyResult(status="created", stored=await self._insert(conn, automation))
        current = _stored(row)
        given = automation.model_fields_set
        if "id" in given and automation.id != current.id:
            raise ValidationFailed(
                [
                    (
                        "id",
                        f"{automation.name!r} is stored with id {current.id}, not {automation.id}; "
                        "apply matches automations by name, so leave id out or use the stored one",
                    )
                ]
            )
        merged = automation.model_copy(
            update={
                "id": current.id,
                "enabled": automation.enabled if "enabled" in given else current.enabled,
            }
        )
        if _document(merged) == row.document:
            return ApplyResult(status="unchanged", stored=current)
        return ApplyResult(status="updated", stored=await self._update(conn, current, merged))

    async def _update(
        self, conn: AsyncConnection, current: StoredAutomation, merged: Automation
    ) -> StoredAutomation:
        now = self._clock()
        # Trigger state starts when the automation is enabled, and outlives edits of its description or
        # actions; the evaluator tells a changed trigger by its digest (triggers.compiled).
        resumed = {"enabled_at": now} if merged.enabled and not current.enabled else {}
        version = (
            await conn.execute(
                update(automations)
                .where(automations.c.id == current.id)
                .values(
                    enabled=merged.enabled,
                    document=_document(merged),
                    updated=now,
                    version=automations.c.version + 1,
                    **resumed,
                )
                .returning(automations.c.version)
            )
        ).scalar_one()
        return StoredAutomation(automation=merged, version=version, created=current.created, updated=now)

    async def set_enabled(self, name_or_id: str | UUID, enabled: bool) -> StoredAutomation:
        """Resume (True) or pause (False) an automation; already in that state changes nothing."""
        target = await self.resolve(name_or_id)
        async with self._db.begin() as conn:
            row = (
                await conn.execute(select(automations).where(automations.c.id == target.id).with_for_update())
            ).first()
            if row is None:
                raise NotFound(f"automation {target.name!r} was deleted meanwhile")
            current = _stored(row)
            if current.enabled == enabled:
                return current
            merged = current.automation.model_copy(update={"enabled": enabled})
            stored = await self._update(conn, current, merged)
        await self._changed()
        log.info(
            "automation %r %s", current.name, "resumed" if enabled else "paused",
            extra={"automation": str(current.id)},
        )  # fmt: skip
        return stored

    async def delete(self, name_or_id: str | UUID) -> StoredAutomation:
        """Delete an automation, its recorded firings and their action results; returns what was deleted."""
        target = await self.resolve(name_or_id)
        async with self._db.begin() as conn:
            deleted = await conn.execute(delete(automations).where(automations.c.id == target.id))
            await conn.execute(delete(firings).where(firings.c.automation_id == target.id))
            await conn.execute(delete(action_results).where(action_results.c.automation_id == target.id))
        if deleted.rowcount == 0:
            raise NotFound(f"automation {target.name!r} was deleted meanwhile")
        await self._changed()
        log.info("automation %r deleted", target.name, extra={"automation": str(target.id)})
        return target

    async def count(self) -> int:
        """How many automations are stored."""
        async with self._db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(automations))).scalar_one())
