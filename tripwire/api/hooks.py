"""``POST|PUT|GET /hooks/{slug}``: an HTTP request becomes an event (DESIGN §7). Not behind the API key:
each webhook has its own auth (events/webhooks/auth.py).

1. Answers, by precedence: 404 unknown or disabled slug (the same answer for both), 429 over the rate
   limit (with ``Retry-After``), 413 body too large, 401 auth, 400 malformed JSON, 422 template or event
   invalid, 401 replay, else 202 ``{"accepted", "ids"}`` once every event is on the stream. Any refusal
   publishes nothing, is counted and kept in the webhook's recent failures (events/webhooks/stats.py)
   with the status and reason, never the body. Every request to a known slug counts on the rate limit.
2. One Redis round trip per request (events/webhooks/ledger.py): the webhook comes from the in-process
   cache without asking Redis; the body is read, authenticated, mapped and encoded; then one script
   checks that the cache was current, counts the rate limit, claims the replay key, appends the events
   and counts them, or records the refusal (where 429 wins over what else was wrong). A stale cache is
   reloaded and the request mapped again. So a request over the rate limit is refused after its body
   was checked, not before: the same answer, a little more CPU for a refused sender.
3. The lean path: ``create_app`` returns a ``TripwireAPI`` whose ``__call__`` hands exactly
   ``POST|PUT|GET /hooks/<slug>`` to ``HookIntake.asgi`` before FastAPI's middleware and router (which
   matched some 50 routes in turn, built a Request and solved dependencies: a third of the route's CPU,
   bench/webhooks.py). The FastAPI routes stay: they document the endpoint in OpenAPI and serve what the
   lean path does not take (other methods get 405 as before), through the same ``HookIntake.handle``.
4. Headers become one dict of lower-case names (repeats joined with ", ") once per request; answers are
   encoded with orjson. An exception that escapes ``handle`` (Redis down: 503) is answered by
   ``tripwire.api.errors.error_reply``, the table the FastAPI handlers use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from blocks.crypto import Cipher
from blocks.store import BlockStore
from events.emit import EventEmitter
from events.model import now_utc
from events.webhooks.auth import Unauthorized, check
from events.webhooks.cache import WebhookCache
from events.webhooks.intake import HookRequest, to_events
from events.webhooks.ledger import Ledger, Outcome
from events.webhooks.model import CompiledWebhook, NoAuth
from events.webhooks.ratelimit import RateLimited, RateWindow, rate_window
from events.webhooks.store import WebhookStore
from tripwire.api.errors import PayloadTooLarge, error_reply, status_for
from tripwire.api.events import read_body, read_limited
from tripwire.db import Database
from tripwire.errors import ConfigurationError, ValidationFailed
from tripwire.settings import Settings

__all__ = ["METHODS", "NOT_FOUND", "PREFIX", "HookIntake", "HookReply", "hook_slug", "hooks_router"]

log = logging.getLogger(__name__)

NOT_FOUND = "no webhook at this address"
PREFIX = "/hooks/"
METHODS = frozenset({"POST", "PUT", "GET"})
_JSON = (b"content-type", b"application/json")
ATTEMPTS = 3  # mappings of one request when the webhooks keep changing under it (ledger.py note 3)


class HookReply(NamedTuple):
    """An answer: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _reply(status: int, document: Any, *headers: tuple[str, str]) -> HookReply:
    return HookReply(status, orjson.dumps(document), headers)


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw:  # names arrive lower-cased; repeats are joined
        key, text = name.decode("latin-1"), value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def _query(query_string: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not query_string:
        return out
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key in out:
            out[key] = [*out[key], value] if isinstance(out[key], list) else [out[key], value]
        else:
            out[key] = value
    return out


def hook_slug(scope: Scope) -> str | None:
    """The slug when ``scope`` is exactly ``POST|PUT|GET /hooks/<slug>`` (the lean path), else None."""
    if scope["type"] != "http" or scope["method"] not in METHODS:
        return None
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        path = path[len(root) :]  # as starlette's get_route_path
    if not path.startswith(PREFIX):
        return None
    slug = path[len(PREFIX) :]
    return slug if slug and "/" not in slug else None


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as ASGI delivers it (starlette's ``Request.stream`` without the Request)."""
    while True:
        message = await receive()
        if message["type"] == "http.request":
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


class HookIntake:
    """The intake: slug -> webhook, checks, mapping, publish; shared by the lean path and the routes."""

    def __init__(self, settings: Settings, db: Database, redis: Any, emitter: EventEmitter) -> None:
        self.settings = settings
        self.emitter = emitter
        store = WebhookStore(db, redis, settings.streams)
        self.cache = WebhookCache(store, lambda: BlockStore(db, Cipher.from_settings(settings)))
        self.ledger = Ledger(redis, settings.streams, store.version_key)

    # -- ASGI ------------------------------------------------------------------------------------------------
    async def asgi(self, scope: Scope, receive: Receive, send: Send, slug: str) -> None:
        """Serve one request on the lean path (note 3)."""
        method: str = scope["method"]
        headers = _headers(scope["headers"])

        def read(limit: int) -> Awaitable[bytes]:
            return read_limited(headers.get("content-length"), _chunks(receive), limit)

        try:
            reply = await self.handle(method, slug, headers, scope["query_string"], read)
        except ClientDisconnect:
            return  # nobody to answer
        except Exception as exc:
            status, document = error_reply(exc, method, scope["path"])
            reply = _reply(status, document)
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [*extra, (b"content-length", str(len(reply.body)).encode()), _JSON],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})

    # -- the request -----------------------------------------------------------------------------------------
    async def handle(
        self,
        method: str,
        slug: str,
        headers: dict[str, str],
        query_string: bytes,
        read: Callable[[int], Awaitable[bytes]],
    ) -> HookReply:
        """Answer one request (notes 1-2); ``read(limit)`` reads the body or raises PayloadTooLarge."""
        webhook, version = self.cache.peek(slug)
        if webhook is None:  # maybe new since the last load: ask
            webhook = await self.cache.lookup(slug)
            if webhook is None:
                return _reply(404, {"detail": NOT_FOUND})
            version = self.cache.peek(slug)[1]
        request = _Request(method, headers, query_string)
        try:
            request.raw = await read(webhook.definition.max_body_bytes)
        except PayloadTooLarge as exc:  # the body is not read whole: answer with a fresh definition
            webhook = await self.cache.lookup(slug)
            if webhook is None:
                return _reply(404, {"detail": NOT_FOUND})
            reply = await self._refusal(webhook, None, self._window(webhook, time.time()), exc)
            assert reply is not None  # not stale: no version to check
            return reply
        for attempt in range(ATTEMPTS):
            last = attempt == ATTEMPTS - 1  # the counter keeps moving: take the newest definition as is
            reply = await self._attempt(webhook, None if last else version, request)
            if reply is not None:
                return reply
            webhook = await self.cache.lookup(slug)  # stale: reload, map again
            if webhook is None:
                return _reply(404, {"detail": NOT_FOUND})
            version = self.cache.peek(slug)[1]
        raise AssertionError("unreachable")  # pragma: no cover - the last attempt never comes back stale

    def _window(self, webhook: CompiledWebhook, now: float) -> RateWindow | None:
        limit = webhook.definition.rate_limit
        return None if limit is None else rate_window(self.settings.streams, webhook.id, limit, now)

    async def _attempt(
        self, webhook: CompiledWebhook, version: int | None, request: _Request
    ) -> HookReply | None:
        """The answer, or None when ``webhook`` turned out stale (nothing was written)."""
        definition = webhook.definition
        now = time.time()
        rate = self._window(webhook, now)
        raw = request.raw
        claim = None
        try:
            if len(raw) > definition.max_body_bytes:
                limit = definition.max_body_bytes  # smaller since the body was read (a reload)
                raise PayloadTooLarge([("body", f"is larger than the limit of {limit} bytes")])
            auth = definition.auth
            secret = None if isinstance(auth, NoAuth) else await self.cache.secret(auth.secret)
            replay = check(auth, secret, request.headers, raw, now)
            query = _query(request.query)
            mapped = to_events(webhook, HookRequest(request.method, request.headers, raw, query))
            events, payloads = self.emitter.prepare(mapped)
        except (Unauthorized, ValidationFailed, ConfigurationError) as exc:
            return await self._refusal(webhook, version, rate, exc)
        if replay is not None:
            key = self.settings.streams.key("webhooks", webhook.id, "seen", replay)
            claim = (key, 2 * getattr(auth, "tolerance_s", 300))
        done = await self.ledger.accept(
            webhook.id, self.emitter.stream, payloads, expected=version, rate=rate, claim=claim
        )
        if done.outcome is Outcome.STALE:
            return None
        if done.outcome is Outcome.RATE_LIMITED:
            assert rate is not None
            return await self._refusal(webhook, None, None, rate.refusal())
        if done.outcome is Outcome.REPLAYED:
            replayed = Unauthorized("this signed request was already received (replay refused)")
            return await self._refusal(webhook, None, None, replayed)
        return _reply(202, {"accepted": len(events), "ids": [str(e.id) for e in events]})

    async def _refusal(
        self, webhook: CompiledWebhook, version: int | None, rate: RateWindow | None, exc: Exception
    ) -> HookReply | None:
        """Record and answer a refusal; None when ``webhook`` turned out stale (nothing was written)."""
        reply = _refusal_reply(exc)
        reason = str(exc)
        status = await self.ledger.refuse(
            webhook.id, reply.status, reason, now_utc(), expected=version, rate=rate
        )
        if status is None:
            return None
        if status == 429 and reply.status != 429:  # over the limit as well: that answer wins (note 1)
            assert rate is not None
            exc = rate.refusal()
            reply, reason = _refusal_reply(exc), str(exc)
        log.info("webhook %r refused a request (%d): %s", webhook.definition.name, reply.status, reason,
                 extra={"webhook": webhook.id})  # fmt: skip
        return reply


class _Request:
    """What ``handle`` keeps of a request between attempts."""

    __slots__ = ("headers", "method", "query", "raw")

    def __init__(self, method: str, headers: dict[str, str], query: bytes) -> None:
        self.method = method
        self.headers = headers
        self.query = query
        self.raw = b""


def _refusal_reply(exc: Exception) -> HookReply:
    if isinstance(exc, RateLimited):
        return _reply(429, {"detail": str(exc)}, ("Retry-After", str(exc.retry_after_s)))
    if isinstance(exc, Unauthorized):
        return _reply(401, {"detail": str(exc)}, ("WWW-Authenticate", "Signature"))
    if isinstance(exc, ValidationFailed):
        detail = [{"loc": loc, "msg": msg} for loc, msg in exc.errors]
        return _reply(status_for(exc), {"detail": detail})
    assert isinstance(exc, ConfigurationError)
    return _reply(500, {"detail": f"the webhook is misconfigured: {exc}"})


def hooks_router() -> APIRouter:
    """The documented ``/hooks/{slug}`` routes (on the app itself, not under /api: per-webhook auth).

    ``TripwireAPI`` serves these requests on the lean path before they reach the router (note 3); the
    routes answer the same through ``app.state.hooks`` when the app is mounted some other way.
    """
    router = APIRouter(prefix=PREFIX.rstrip("/"), tags=["webhooks in"])

    async def hook(request: Request, slug: str) -> Any:
        intake: HookIntake = request.app.state.hooks

        def read(limit: int) -> Awaitable[bytes]:
            return read_body(request, limit)

        headers = _headers(request.scope["headers"])
        reply = await intake.handle(request.method, slug, headers, request.scope["query_string"], read)
        return Response(reply.body, reply.status, dict(reply.headers), media_type="application/json")

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
