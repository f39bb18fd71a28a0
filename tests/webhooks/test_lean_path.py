"""``/hooks/<slug>`` on the lean path (before FastAPI) answers exactly as the documented FastAPI route does;
the rate limit, the cache check and Redis failures keep their meaning with one round trip per request."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from blocks import BlockStore
from events.bus import RedisBus
from events.webhooks import sign_github, sign_stripe
from tests.tripwire.test_api_events import asgi_client, make_app
from tests.webhooks.conftest import GITHUB_SECRET, GITHUB_TEMPLATE, STRIPE_SECRET, create_webhook, github_body
from tests.webhooks.test_hooks import STRIPE_TEMPLATE, github_headers, inspect, stripe_body
from tripwire.db import Database
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

GITHUB_AUTH = {"type": "github", "secret": "secret/github-hook"}
STRIPE_AUTH = {"type": "stripe", "secret": "secret/stripe-hook"}


def routed_only(app: FastAPI) -> Any:
    """The app without its lean path: every request goes through FastAPI's router."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    return asgi


@asynccontextmanager
async def two_clients(
    keyed: Settings, db: Database, redis_client: aioredis.Redis
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    app = make_app(keyed, RedisBus(redis_client, keyed.streams), db, redis_client)
    async with asgi_client(app) as lean, asgi_client(routed_only(app)) as routed:
        yield lean, routed


def comparable(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    body = response.json()
    if isinstance(body, dict) and "ids" in body:
        body = {**body, "ids": len(body["ids"])}
    return response.status_code, body, dict(response.headers)


async def test_the_lean_path_and_the_documented_route_answer_alike(
    keyed: Settings, db: Database, redis_client: aioredis.Redis, secrets: BlockStore
) -> None:
    async with two_clients(keyed, db, redis_client) as (lean, routed):
        hook = await create_webhook(
            lean, name="github", template=GITHUB_TEMPLATE, auth=GITHUB_AUTH, max_body_bytes=4096
        )
        body = github_body()
        cases: list[tuple[str, bytes, dict[str, str]]] = [
            (hook["path"], body, github_headers(body)),
            (hook["path"], body, github_headers(body, "wrong")),
            (hook["path"], b'{"action": ', github_headers(b'{"action": ')),
            (hook["path"], b"{" + b" " * 5000 + b"}", github_headers(b"{}")),
            (hook["path"] + "?x=1&x=2", b'{"action": "x"}', github_headers(b'{"action": "x"}')),
            ("/hooks/no-such-hook-slug-000", body, github_headers(body)),
        ]
        for path, content, headers in cases:
            a = await lean.post(path, content=content, headers=headers)
            again = {**headers, "X-GitHub-Delivery": str(uuid.uuid4())}
            b = await routed.post(path, content=content, headers=again)
            assert comparable(a) == comparable(b), (path, a.text, b.text)
        statuses = [c["status"] for c in (await inspect(lean, "github"))["counts"]["failures"]]
        assert sorted(statuses) == [400, 400, 401, 401, 413, 413, 422, 422]
        other = await lean.delete(hook["path"])  # not a hook method: FastAPI answers, as before
        assert other.status_code == 405
        assert (await lean.post(hook["path"] + "/more", content=body)).status_code == 404
        schema = (await lean.get("/openapi.json")).json()
        assert set(schema["paths"]["/hooks/{slug}"]) == {"get", "post", "put"}


async def test_a_request_over_the_rate_limit_gets_429_whatever_else_is_wrong(
    keyed: Settings, db: Database, redis_client: aioredis.Redis, secrets: BlockStore
) -> None:
    async with two_clients(keyed, db, redis_client) as (client, _):
        limit = {"requests": 2, "per_s": 3600}
        hook = await create_webhook(
            client, name="github", template=GITHUB_TEMPLATE, auth=GITHUB_AUTH, rate_limit=limit
        )
        body = github_body()
        bad = github_headers(body, "wrong")
        first = await client.post(hook["path"], content=body, headers=bad)
        ok = await client.post(hook["path"], content=body, headers=github_headers(body))
        over_bad = await client.post(hook["path"], content=body, headers=bad)
        over_good = await client.post(hook["path"], content=body, headers=github_headers(body))
        assert [r.status_code for r in (first, ok, over_bad, over_good)] == [401, 202, 429, 429]
        assert 1 <= int(over_bad.headers["Retry-After"]) <= 3600
        counts = (await inspect(client, "github"))["counts"]
        assert counts["accepted"] == 1 and counts["by_status"] == {"401": 1, "429": 2}
        assert await redis_client.xlen(keyed.streams.events) == 1


async def test_a_change_made_by_another_process_takes_effect_at_once(
    keyed: Settings, db: Database, redis_client: aioredis.Redis, secrets: BlockStore
) -> None:
    bus = RedisBus(redis_client, keyed.streams)
    serving, admin_app = make_app(keyed, bus, db, redis_client), make_app(keyed, bus, db, redis_client)
    async with asgi_client(serving) as client, asgi_client(admin_app) as admin:
        hook = await create_webhook(admin, name="stripe", template=STRIPE_TEMPLATE, auth=STRIPE_AUTH)

        def signed(event_id: str) -> tuple[bytes, dict[str, str]]:
            body = stripe_body(event_id)
            return body, {"Stripe-Signature": sign_stripe(STRIPE_SECRET, body, int(time.time()))}

        body, headers = signed("evt_1")
        assert (await client.post(hook["path"], content=body, headers=headers)).status_code == 202
        changed = {**STRIPE_TEMPLATE, "event": "billing.{$.body.type}"}
        definition = {k: v for k, v in hook["definition"].items() if k != "slug"}
        edited = await admin.put("/api/webhooks/stripe", json={**definition, "template": changed})
        assert edited.status_code == 200
        body, headers = signed("evt_2")
        assert (await client.post(hook["path"], content=body, headers=headers)).status_code == 202
        assert (await admin.post("/api/webhooks/stripe/disable")).status_code == 200
        body, headers = signed("evt_3")
        assert (await client.post(hook["path"], content=body, headers=headers)).status_code == 404
        names = [json.loads(f[b"data"])["event"] for _, f in await redis_client.xrange(keyed.streams.events)]
        assert names == ["stripe.invoice.paid", "billing.invoice.paid"]


async def test_a_failed_publish_answers_500_and_the_same_signed_request_can_be_sent_again(
    keyed: Settings, db: Database, redis_client: aioredis.Redis, secrets: BlockStore
) -> None:
    async with two_clients(keyed, db, redis_client) as (client, _):
        hook = await create_webhook(client, name="stripe", template=STRIPE_TEMPLATE, auth=STRIPE_AUTH)
        body = stripe_body()
        headers = {"Stripe-Signature": sign_stripe(STRIPE_SECRET, body, int(time.time()))}
        await redis_client.set(keyed.streams.events, "not a stream")
        failed = await client.post(hook["path"], content=body, headers=headers)
        assert failed.status_code == 500 and failed.json() == {
            "detail": "internal error; the server log has the details"
        }
        await redis_client.delete(keyed.streams.events)
        assert (await client.post(hook["path"], content=body, headers=headers)).status_code == 202
        assert (await client.post(hook["path"], content=body, headers=headers)).status_code == 401  # replay
        assert await redis_client.xlen(keyed.streams.events) == 1


async def test_redis_down_is_a_503_on_the_lean_path(
    keyed: Settings, db: Database, secrets: BlockStore
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    app = make_app(keyed, RedisBus(dead, keyed.streams), db, dead)
    try:
        async with asgi_client(app) as client:
            body = github_body()
            path = "/hooks/some-hook-slug-000"
            response = await client.post(path, content=body, headers=github_headers(body))
        assert response.status_code == 503
        assert response.json() == {"detail": "Redis is unavailable: ConnectionError"}
        assert GITHUB_SECRET not in response.text
        assert sign_github(GITHUB_SECRET, body) not in response.text
    finally:
        await dead.aclose()
