"""The FastAPI application: ``create_app(settings, bus=..., db=..., redis=...)``.

The app does not own its resources: whoever calls ``create_app`` (the services runner, a test) starts Redis,
the bus and the database before and stops them after. The app keeps them on ``app.state`` (``settings``,
``bus``, ``db``, ``redis``, ``services``, ``emitter``, ``hooks``) for the routers. ``TripwireAPI`` serves
``/hooks/<slug>`` ahead of FastAPI's router (tripwire/api/hooks.py).

Live tails (``GET /api/events/tail``) are endless responses, and uvicorn waits for open responses before it
runs the lifespan shutdown. So whoever stops the server calls ``close_live_streams(app)`` first (the lifespan
shutdown calls it too, for servers that do not wait).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI
from starlette.types import Receive, Scope, Send

from events.emit import EventEmitter
from events.ports import Bus
from tripwire.api.auth import BearerAuth
from tripwire.api.automations import automations_router
from tripwire.api.blocks import blocks_router
from tripwire.api.deployments import deployments_router
from tripwire.api.errors import install_error_handlers
from tripwire.api.evaluators import evaluators_router
from tripwire.api.events import events_router
from tripwire.api.flow_runs import flow_runs_router
from tripwire.api.health import health_router
from tripwire.api.hooks import HookIntake, hook_slug, hooks_router
from tripwire.api.webhooks import webhooks_router
from tripwire.db import Database
from tripwire.services import Service
from tripwire.settings import Settings

__all__ = ["TripwireAPI", "close_live_streams", "create_app"]

DESCRIPTION = """Tripwire: an event-driven automation engine.

`/api/*` needs `Authorization: Bearer <TRIPWIRE_API_KEY>` when the server has an API key;
`/health` never does.
Errors are `{"detail": [{"loc": "...", "msg": "..."}]}` for refused input (400, 413, 422) and
`{"detail": "..."}` otherwise (401, 404, 503).
"""


class TripwireAPI(FastAPI):
    """FastAPI with the webhook intake's lean path: ``POST|PUT|GET /hooks/<slug>`` goes straight to
    ``app.state.hooks`` (tripwire/api/hooks.py note 2); everything else to FastAPI as usual."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            slug = hook_slug(scope)
            if slug is not None:
                await self.state.hooks.asgi(scope, receive, send, slug)
                return
        await super().__call__(scope, receive, send)


def close_live_streams(app: FastAPI) -> None:
    """End every open live tail now (call before stopping the server); new tails end at once too."""
    app.state.closing.set()


def create_app(
    settings: Settings,
    *,
    bus: Bus,
    db: Database,
    redis: aioredis.Redis,
    services: Sequence[Service] = (),
    tail_heartbeat_s: float = 15.0,
) -> FastAPI:
    """The HTTP API over already started ``bus``, ``db`` and ``redis``; /health reports ``services``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        close_live_streams(app)

    app = TripwireAPI(
        title="Tripwire",
        description=DESCRIPTION,
        version="0.1.0",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.bus = bus
    app.state.db = db
    app.state.redis = redis
    app.state.services = services
    app.state.emitter = EventEmitter(bus, settings)
    app.state.hooks = HookIntake(settings, db, redis, app.state.emitter)
    app.state.closing = asyncio.Event()
    app.state.tail_heartbeat_s = tail_heartbeat_s
    install_error_handlers(app)

    # Every router under /api goes through `api`, so auth covers all of them.
    api = APIRouter(prefix="/api", dependencies=[Depends(BearerAuth(settings.api_key))])
    api.include_router(events_router())
    api.include_router(automations_router())
    api.include_router(evaluators_router())
    api.include_router(blocks_router())
    api.include_router(webhooks_router())
    api.include_router(deployments_router())
    api.include_router(flow_runs_router())
    app.include_router(api)
    app.include_router(health_router())
    app.include_router(hooks_router())  # not under /api: each webhook has its own auth
    return app
