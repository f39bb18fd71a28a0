"""WebhookStore: webhook definitions in SQL, with a change counter in Redis for the intake caches.

1. A row holds the definition document (without slug and enabled, which are columns), the id, the
   name, the slug, ``created``/``updated`` and a ``version`` that grows by one on every change.
2. After every committed change ``streams.key("webhooks", "version")`` is incremented; ``WebhookCache``
   (events/webhooks/cache.py) compares it on each request and reloads when it moved, so a disabled,
   rotated or deleted webhook stops answering at once.
3. Names and slugs are unique; a clash is a ValidationFailed naming ``name`` or ``slug``.
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, Field
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from events.webhooks.model import CompiledWebhook, WebhookDefinition, check_slug, new_slug
from tripwire.changes import ChangeCounter
from tripwire.db import Database
from tripwire.errors import NotFound, ValidationFailed
from tripwire.settings import StreamSettings
from tripwire.tables import webhooks

__all__ = ["StoredWebhook", "WebhookStore"]

log = logging.getLogger(__name__)


class StoredWebhook(BaseModel):
    """A webhook as stored: its definition (with its slug and state) and bookkeeping."""

    id: uuid.UUID
    definition: WebhookDefinition = Field(description="the definition, slug and enabled filled in")
    version: int
    created: datetime
    updated: datetime

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def slug(self) -> str:
        assert self.definition.slug is not None
        return self.definition.slug

    def compiled(self) -> CompiledWebhook:
        """The definition with its template compiled, ready for requests."""
        return CompiledWebhook.of(str(self.id), self.slug, self.version, self.definition)


def _document(definition: WebhookDefinition) -> dict[str, Any]:
    return definition.model_dump(mode="json", exclude={"slug", "enabled"})


def _stored(row: Any) -> StoredWebhook:
    definition = WebhookDefinition.model_validate({**row.document, "slug": row.slug, "enabled": row.enabled})
    return StoredWebhook(
        id=row.id, definition=definition, version=row.version, created=row.created, updated=row.updated
    )


class WebhookStore:
    """Create, list, get, enable/disable, rotate and delete webhooks (notes 1-3)."""

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
        self._changes = ChangeCounter(redis, streams.key("webhooks", "version"))
        self.version_key = self._changes.key

    async def changes_version(self) -> int:
        """The change counter (0 before the first change)."""
        return await self._changes.version()

    async def _changed(self) -> None:
        await self._changes.bump()

    # --- reads ---------------------------------------------------------------------------------------

    async def get(self, name: str) -> StoredWebhook:
        """The webhook with this name; NotFound otherwise."""
        async with self._db.read() as conn:
            row = (await conn.execute(select(webhooks).where(webhooks.c.name == name))).first()
        if row is None:
            raise NotFound(f"no webhook named {name!r} (`tripwire webhook ls` lists them)")
        return _stored(row)

    async def list(self) -> builtins.list[StoredWebhook]:
        """Every webhook, by name."""
        async with self._db.read() as conn:
            rows = (await conn.execute(select(webhooks).order_by(webhooks.c.name))).all()
        return [_stored(row) for row in rows]

    async def enabled(self) -> builtins.list[StoredWebhook]:
        """The enabled webhooks; a stored document that no longer validates is logged and skipped."""
        async with self._db.read() as conn:
            rows = (await conn.execute(select(webhooks).where(webhooks.c.enabled.is_(True)))).all()
        out = []
        for row in rows:
            try:
                out.append(_stored(row))
            except Exception as exc:  # one bad row must not take every webhook down
                log.error("webhook %r is stored but no longer valid, skipped: %s", row.name, exc)
        return out

    # --- writes --------------------------------------------------------------------------------------

    async def create(self, definition: WebhookDefinition) -> StoredWebhook:
        """Store a new webhook (a random slug unless one is chosen); ValidationFailed on a taken name/slug."""
        slug = definition.slug or new_slug()
        now = self._clock()
        webhook_id = uuid.uuid4()
        try:
            async with self._db.begin() as conn:
                await self._check_free(conn, definition.name, slug)
                await conn.execute(
                    webhooks.insert().values(
                        id=webhook_id,
                        name=definition.name,
                        slug=slug,
                        enabled=definition.enabled,
                        document=_document(definition),
                        created=now,
                        updated=now,
                        version=1,
                    )
                )
        except IntegrityError:
            raise ValidationFailed(
                [("name", f"a webhook named {definition.name!r} or slug exists")]
            ) from None
        await self._changed()
        log.info("webhook %r created", definition.name, extra={"webhook": str(webhook_id)})
        stored_def = definition.model_copy(update={"slug": slug})
        return StoredWebhook(id=webhook_id, definition=stored_def, version=1, created=now, updated=now)

    async def _check_free(self, conn: Any, name: str | None, slug: str | None) -> None:
        if name is not None:
            taken = (await conn.execute(select(webhooks.c.id).where(webhooks.c.name == name))).first()
            if taken is not None:
                raise ValidationFailed([("name", f"a webhook named {name!r} already exists")])
        if slug is not None:
            taken = (await conn.execute(select(webhooks.c.id).where(webhooks.c.slug == slug))).first()
            if taken is not None:
                raise ValidationFailed([("slug", "this slug is taken by another webhook; choose another")])

    async def _change(self, name: str, **values: Any) -> StoredWebhook:
        try:
            async with self._db.begin() as conn:
                row = (
                    await conn.execute(select(webhooks).where(webhooks.c.name == name).with_for_update())
                ).first()
                if row is None:
                    raise NotFound(f"no webhook named {name!r} (`tripwire webhook ls` lists them)")
                if "slug" in values:
                    await self._check_free(conn, None, values["slug"])
                await conn.execute(
                    update(webhooks)
                    .where(webhooks.c.id == row.id)
                    .values(**values, updated=self._clock(), version=row.version + 1)
                )
                row = (await conn.execute(select(webhooks).where(webhooks.c.id == row.id))).one()
        except IntegrityError:
            raise ValidationFailed(
                [("slug", "this slug is taken by another webhook; choose another")]
            ) from None
        await self._changed()
        return _stored(row)

    async def set_enabled(self, name: str, enabled: bool) -> StoredWebhook:
        """Enable or disable a webhook (a disabled one answers 404)."""
        stored = await self._change(name, enabled=enabled)
        log.info("webhook %r %s", name, "enabled" if enabled else "disabled")
        return stored

    async def rotate(self, name: str, slug: str | None = None) -> StoredWebhook:
        """Give the webhook a new slug (random unless chosen): the old URL stops working at once."""
        stored = await self._change(name, slug=check_slug(slug) if slug else new_slug())
        log.info("webhook %r got a new slug", name)
        return stored

    async def replace(self, definition: WebhookDefinition) -> StoredWebhook:
        """Replace the definition of an existing webhook; the slug is kept unless one is given."""
        values: dict[str, Any] = {"document": _document(definition), "enabled": definition.enabled}
        if definition.slug is not None:
            values["slug"] = definition.slug
        current = await self.get(definition.name)
        if current.slug == definition.slug:
            values.pop("slug")
        return await self._change(definition.name, **values)

    async def delete(self, name: str) -> None:
        """Delete a webhook; NotFound if there is none."""
        async with self._db.begin() as conn:
            result = await conn.execute(delete(webhooks).where(webhooks.c.name == name))
        if result.rowcount == 0:
            raise NotFound(f"no webhook named {name!r} (`tripwire webhook ls` lists them)")
        await self._changed()
        log.info("webhook %r deleted", name)
