"""Fixtures for webhook tests: the app over real Redis and SQLite, a secret block, GitHub/Stripe bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from blocks import BlockStore, Cipher, Secret
from events.bus import RedisBus
from events.codec import decode_event
from events.model import Event
from tests.tripwire.test_api_events import asgi_client, make_app
from tripwire.db import Database
from tripwire.settings import Settings

GITHUB_SECRET = "gh-hook-secret-0123456789"
STRIPE_SECRET = "whsec_stripe_0123456789"

GITHUB_TEMPLATE: dict[str, Any] = {
    "event": "github.{$.headers.x-github-event}.{$.body.action}",
    "resource": {
        "tripwire.resource.id": "github.repo.{$.body.repository.full_name}",
        "tripwire.resource.name": "$.body.repository.name",
    },
    "related": [
        {"tripwire.resource.id": "github.user.{$.body.sender.login}", "tripwire.resource.role": "sender"}
    ],
    "payload": "$.body",
    "id": "$.headers.x-github-delivery",
}


def pull_request_closed(number: int = 42, merged: bool = True) -> dict[str, Any]:
    """A trimmed GitHub ``pull_request`` delivery body (action ``closed``)."""
    return {
        "action": "closed",
        "number": number,
        "pull_request": {
            "number": number,
            "title": "Fix the flaky test",
            "merged": merged,
            "state": "closed",
        },
        "repository": {"name": "tripwire", "full_name": "acme/tripwire", "private": False},
        "sender": {"login": "octocat"},
    }


def github_body(number: int = 42) -> bytes:
    return json.dumps(pull_request_closed(number)).encode()


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return settings.model_copy(update={"encryption_key": SecretStr(Cipher.generate_key())})


@pytest.fixture
async def db(keyed: Settings) -> AsyncIterator[Database]:
    database = Database(keyed.effective_database_url)
    await database.start()
    yield database
    await database.stop()


@pytest.fixture
async def secrets(db: Database, keyed: Settings) -> BlockStore:
    store = BlockStore(db, Cipher.from_settings(keyed))
    await store.put("secret/github-hook", Secret(value=SecretStr(GITHUB_SECRET)))
    await store.put("secret/stripe-hook", Secret(value=SecretStr(STRIPE_SECRET)))
    return store


@pytest.fixture
async def client(
    keyed: Settings, db: Database, redis_client: aioredis.Redis, secrets: BlockStore
) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(keyed, RedisBus(redis_client, keyed.streams), db, redis_client)
    async with asgi_client(app) as c:
        yield c


async def stream_events(redis_client: aioredis.Redis, settings: Settings) -> list[Event]:
    """Every event on the events stream (XRANGE), oldest first."""
    return [decode_event(f[b"data"]) for _, f in await redis_client.xrange(settings.streams.events)]


async def create_webhook(client: httpx.AsyncClient, **definition: Any) -> dict[str, Any]:
    response = await client.post("/api/webhooks", json=definition)
    assert response.status_code == 201, response.text
    return dict(response.json())
