"""``/api/webhooks``: manage webhook definitions (behind the API key).

| route | does |
|---|---|
| ``POST /webhooks`` | create (201); the answer carries the slug and the path ``/hooks/<slug>`` |
| ``POST /webhooks/validate`` | validate and compile a definition, store nothing |
| ``GET /webhooks``, ``GET /webhooks/{name}`` | list; one with its counts and recent failures |
| ``PUT /webhooks/{name}`` | replace the definition (the slug is kept unless one is given) |
| ``POST /webhooks/{name}/rotate`` | a new slug (``{"slug": ...}`` to choose it) |
| ``POST /webhooks/{name}/enable``, ``/disable`` | a disabled webhook answers 404 |
| ``POST /webhooks/{name}/test`` | map a sample ``{"body", "headers", "query", "method"}``; emit nothing |
| ``DELETE /webhooks/{name}`` | delete it (204) |

A secret block the auth names must exist when the webhook is saved (422 on ``auth.secret``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from blocks.crypto import Cipher
from blocks.store import BlockStore
from events.model import Event
from events.webhooks.intake import HookRequest, to_events
from events.webhooks.model import NoAuth, WebhookDefinition, parse_definition
from events.webhooks.stats import WebhookCounts, WebhookStats
from events.webhooks.store import StoredWebhook, WebhookStore
from tripwire.api.errors import parse_json
from tripwire.api.events import read_body
from tripwire.errors import NotFound, ValidationFailed

__all__ = ["TestRequest", "WebhookDetail", "WebhookList", "WebhookOut", "webhooks_router"]

MAX_BODY_BYTES = 1024 * 1024


class WebhookOut(BaseModel):
    """A stored webhook: where it listens and how it maps requests."""

    id: UUID
    name: str
    slug: str
    path: str = Field(description="where callers send requests: /hooks/<slug>")
    enabled: bool
    version: int
    created: datetime
    updated: datetime
    definition: WebhookDefinition

    @classmethod
    def of(cls, stored: StoredWebhook) -> WebhookOut:
        return cls(
            id=stored.id,
            name=stored.name,
            slug=stored.slug,
            path=f"/hooks/{stored.slug}",
            enabled=stored.definition.enabled,
            version=stored.version,
            created=stored.created,
            updated=stored.updated,
            definition=stored.definition,
        )


class WebhookList(BaseModel):
    """Every webhook, by name."""

    webhooks: list[WebhookOut]


class WebhookDetail(WebhookOut):
    """A webhook with what it received: counts and the newest failures (never bodies or secrets)."""

    counts: WebhookCounts


class TestRequest(BaseModel):
    """A sample request for ``test``."""

    method: str = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, Any] = Field(default_factory=dict)
    body: Any = None


class Rotate(BaseModel):
    """Optional body of ``rotate``."""

    slug: str | None = None


def _store(request: Request) -> WebhookStore:
    state = request.app.state
    return WebhookStore(state.db, state.redis, state.settings.streams)


async def _definition(request: Request, name: str | None = None) -> WebhookDefinition:
    document = parse_json(await read_body(request, MAX_BODY_BYTES))
    if name is not None and isinstance(document, dict):
        given = document.setdefault("name", name)
        if given != name:
            raise ValidationFailed([("name", f"is {given!r} but the path names {name!r}")])
    definition = parse_definition(document)
    auth = definition.auth
    if not isinstance(auth, NoAuth):
        state = request.app.state
        try:
            await BlockStore(state.db, Cipher.from_settings(state.settings)).get(auth.secret)
        except NotFound:
            raise ValidationFailed(
                [
                    (
                        "auth.secret",
                        f"no block {auth.secret!r}: create it with `tripwire block create {auth.secret}`",
                    )
                ]
            ) from None
    return definition


def webhooks_router() -> APIRouter:
    """The ``/webhooks`` routes (mounted under ``/api``, behind auth)."""
    router = APIRouter(prefix="/webhooks", tags=["webhooks"])

    @router.post("", status_code=201, response_model=WebhookOut, summary="Create a webhook")
    async def create(request: Request) -> WebhookOut:
        return WebhookOut.of(await _store(request).create(await _definition(request)))

    @router.post("/validate", response_model=WebhookDefinition, summary="Validate a definition only")
    async def validate(request: Request) -> WebhookDefinition:
        return await _definition(request)

    @router.get("", response_model=WebhookList, summary="Every webhook, by name")
    async def list_webhooks(request: Request) -> WebhookList:
        return WebhookList(webhooks=[WebhookOut.of(s) for s in await _store(request).list()])

    @router.get("/{name}", response_model=WebhookDetail, summary="One webhook, its counts and failures")
    async def inspect(request: Request, name: str) -> WebhookDetail:
        stored = await _store(request).get(name)
        state = request.app.state
        counts = await WebhookStats(state.redis, state.settings.streams).read(str(stored.id))
        return WebhookDetail(**WebhookOut.of(stored).model_dump(), counts=counts)

    @router.put("/{name}", response_model=WebhookOut, summary="Replace a webhook's definition")
    async def replace(request: Request, name: str) -> WebhookOut:
        return WebhookOut.of(await _store(request).replace(await _definition(request, name)))

    @router.post("/{name}/rotate", response_model=WebhookOut, summary="Give a webhook a new slug")
    async def rotate(request: Request, name: str) -> WebhookOut:
        raw = await read_body(request, MAX_BODY_BYTES)
        body = Rotate.model_validate(parse_json(raw)) if raw.strip() else Rotate()
        try:
            return WebhookOut.of(await _store(request).rotate(name, body.slug))
        except ValueError as exc:
            raise ValidationFailed([("slug", str(exc))]) from None

    @router.post("/{name}/enable", response_model=WebhookOut, summary="Enable a webhook")
    async def enable(request: Request, name: str) -> WebhookOut:
        return WebhookOut.of(await _store(request).set_enabled(name, True))

    @router.post("/{name}/disable", response_model=WebhookOut, summary="Disable a webhook (404 to callers)")
    async def disable(request: Request, name: str) -> WebhookOut:
        return WebhookOut.of(await _store(request).set_enabled(name, False))

    @router.post("/{name}/test", response_model=list[Event], summary="Map a sample request; emit nothing")
    async def test(request: Request, name: str, sample: TestRequest) -> list[Event]:
        webhook = (await _store(request).get(name)).compiled()
        headers = {k.lower(): v for k, v in sample.headers.items()}
        if isinstance(sample.body, str | type(None)):
            raw = (sample.body or "").encode()
        else:
            raw = json.dumps(sample.body).encode()
            headers.setdefault("content-type", "application/json")
        return to_events(webhook, HookRequest(sample.method.upper(), headers, raw, sample.query))

    @router.delete("/{name}", status_code=204, response_class=Response, summary="Delete a webhook")
    async def remove(request: Request, name: str) -> Response:
        store = _store(request)
        stored = await store.get(name)
        await store.delete(name)
        state = request.app.state
        await WebhookStats(state.redis, state.settings.streams).forget(str(stored.id))
        return Response(status_code=204)

    return router
