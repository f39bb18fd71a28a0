"""``POST|PUT|GET /hooks/{slug}``: an HTTP request becomes an event (DESIGN §7). Not behind the API key:
each webhook has its own auth (events/webhooks/auth.py).

Order of checks, cheapest first: slug (404, the same answer for unknown and disabled), rate limit (429
with ``Retry-After``), body size (413), auth (401), body and mapping (400 malformed JSON, 422 template
or event invalid), replay claim (401), then publish. 202 ``{"accepted", "ids"}`` only once every event
is on the stream; any refusal publishes nothing, is counted and kept in the webhook's recent failures
(events/webhooks/stats.py) with the status and reason, never the body.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from blocks.crypto import Cipher
from blocks.store import BlockStore
from events.emit import EventEmitter
from events.model import now_utc
from events.webhooks.auth import Unauthorized, check
from events.webhooks.cache import WebhookCache
from events.webhooks.intake import HookRequest, to_events
from events.webhooks.model import CompiledWebhook, NoAuth
from events.webhooks.ratelimit import RateLimited, RateLimiter
from events.webhooks.stats import WebhookStats
from events.webhooks.store import WebhookStore
from tripwire.api.errors import status_for
from tripwire.api.events import Accepted, read_body
from tripwire.errors import ConfigurationError, ValidationFailed
from tripwire.settings import Settings

__all__ = ["NOT_FOUND", "hooks_router"]

log = logging.getLogger(__name__)

NOT_FOUND = "no webhook at this address"


def _headers(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in request.headers.items():  # names arrive lower-cased; repeats are joined
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _query(request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key in out:
            out[key] = [*out[key], value] if isinstance(out[key], list) else [out[key], value]
        else:
            out[key] = value
    return out


class _Hooks:
    """The state of the route, built on the first request from ``app.state``."""

    def __init__(self, state: Any) -> None:
        settings: Settings = state.settings
        self.settings = settings
        self.redis = state.redis
        self.emitter: EventEmitter = state.emitter
        store = WebhookStore(state.db, state.redis, settings.streams)
        self.cache = WebhookCache(store, lambda: BlockStore(state.db, Cipher.from_settings(settings)))
        self.limiter = RateLimiter(state.redis, settings.streams)
        self.stats = WebhookStats(state.redis, settings.streams)

    async def receive(self, webhook: CompiledWebhook, request: Request) -> list[Any]:
        definition = webhook.definition
        if definition.rate_limit is not None:
            await self.limiter.hit(webhook.id, definition.rate_limit)
        raw = await read_body(request, definition.max_body_bytes)
        headers = _headers(request)
        auth = definition.auth
        secret = None if isinstance(auth, NoAuth) else await self.cache.secret(auth.secret)
        replay = check(auth, secret, headers, raw, time.time())
        events = to_events(webhook, HookRequest(request.method, headers, raw, _query(request)))
        claim = None
        if replay is not None:
            claim = self.settings.streams.key("webhooks", webhook.id, "seen", replay)
            ttl_s = 2 * getattr(auth, "tolerance_s", 300)
            if not await self.redis.set(claim, b"1", nx=True, ex=ttl_s):
                raise Unauthorized("this signed request was already received (replay refused)")
        try:
            return await self.emitter.emit_events(events)
        except BaseException:
            if claim is not None:  # not published: the sender may retry the same signed request
                await self.redis.delete(claim)
            raise


async def _refuse(hooks: _Hooks, webhook: CompiledWebhook, status: int, reason: str) -> None:
    log.info("webhook %r refused a request (%d): %s", webhook.definition.name, status, reason,
             extra={"webhook": webhook.id})  # fmt: skip
    await hooks.stats.rejected(webhook.id, status, reason, now_utc())


def hooks_router() -> APIRouter:
    """The ``/hooks/{slug}`` routes (on the app itself, not under /api: per-webhook auth)."""
    router = APIRouter(prefix="/hooks", tags=["webhooks in"])
    holder: list[_Hooks] = []

    async def hook(request: Request, slug: str) -> Any:
        if not holder:
            holder.append(_Hooks(request.app.state))
        hooks = holder[0]
        webhook = await hooks.cache.lookup(slug)
        if webhook is None:
            return JSONResponse({"detail": NOT_FOUND}, status_code=404)
        try:
            accepted = await hooks.receive(webhook, request)
        except RateLimited as exc:
            await _refuse(hooks, webhook, 429, str(exc))
            return JSONResponse(
                {"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after_s)}
            )
        except Unauthorized as exc:
            await _refuse(hooks, webhook, 401, str(exc))
            return JSONResponse(
                {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Signature"}
            )
        except ValidationFailed as exc:
            status = status_for(exc)
            await _refuse(hooks, webhook, status, str(exc))
            detail = [{"loc": loc, "msg": msg} for loc, msg in exc.errors]
            return JSONResponse({"detail": detail}, status_code=status)
        except ConfigurationError as exc:
            await _refuse(hooks, webhook, 500, str(exc))
            return JSONResponse({"detail": f"the webhook is misconfigured: {exc}"}, status_code=500)
        await hooks.stats.accepted(webhook.id, len(accepted))
        body = Accepted(accepted=len(accepted), ids=[e.id for e in accepted])
        return JSONResponse(body.model_dump(mode="json"), status_code=202)

    responses: dict[int | str, dict[str, Any]] = {
        202: {"description": "every event is on the stream; `ids` are their ids"},
        400: {"description": "malformed JSON"},
        401: {"description": "missing or wrong credentials, timestamp outside the tolerance, replay"},
        404: {"description": "no enabled webhook with this slug"},
        413: {"description": "body over the webhook's limit"},
        422: {"description": "the template cannot be applied (`loc` names the field, `msg` the path)"},
        429: {"description": "over the webhook's rate limit; see Retry-After"},
    }
    for method in ("POST", "PUT", "GET"):
        router.add_api_route(
            "/{slug}", hook, methods=[method], status_code=202, responses=responses,
            summary=f"{method} a request to a webhook: it becomes an event",
            name=f"hook_{method.lower()}",
        )  # fmt: skip
    return router
