"""GET /health on real Redis and SQLite: ok, degraded (Redis down, a failed service), never behind auth."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from events.bus import RedisBus
from events.recorder import RecorderService
from tests.conftest import free_port
from tripwire.api import create_app
from tripwire.db import Database
from tripwire.services import Service, ServiceState
from tripwire.settings import Settings

pytestmark = pytest.mark.redis


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.effective_database_url)
    await database.start()
    yield database
    await database.stop()


@pytest.fixture
def bus(redis_client: aioredis.Redis, settings: Settings) -> RedisBus:
    return RedisBus(redis_client, settings.streams)


@pytest.fixture
async def recorder(bus: RedisBus, db: Database, settings: Settings) -> AsyncIterator[RecorderService]:
    service = RecorderService(bus, db, settings, consumer="health-test")
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def dead_redis() -> AsyncIterator[aioredis.Redis]:
    """A client for a port nobody listens on (no retries: fail fast)."""
    client = aioredis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    yield client
    await client.aclose()


@pytest.fixture
async def failed_recorder(dead_redis: aioredis.Redis, db: Database, settings: Settings) -> RecorderService:
    """A real recorder whose start failed because its Redis is unreachable."""
    service = RecorderService(RedisBus(dead_redis, settings.streams), db, settings, consumer="health-test")
    with pytest.raises(Exception):  # noqa: B017 - the exact connection error is redis-py's business
        await service.start()
    assert service.state is ServiceState.FAILED
    return service


async def get_health(
    settings: Settings, bus: RedisBus, db: Database, redis: aioredis.Redis, services: list[Service]
) -> httpx.Response:
    app = create_app(settings, bus=bus, db=db, redis=redis, services=services)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tripwire"
    ) as client:
        return await client.get("/health")


async def test_health_ok_when_everything_works(
    settings: Settings, bus: RedisBus, db: Database, redis_client: aioredis.Redis, recorder: RecorderService
) -> None:
    response = await get_health(settings, bus, db, redis_client, [recorder])
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["redis"]["ok"] is True and body["redis"]["latency_ms"] >= 0
    assert body["database"]["ok"] is True and body["database"]["latency_ms"] >= 0
    assert body["services"] == {"recorder": "running"}


async def test_health_degraded_when_a_service_failed(
    settings: Settings,
    bus: RedisBus,
    db: Database,
    redis_client: aioredis.Redis,
    failed_recorder: RecorderService,
) -> None:
    response = await get_health(settings, bus, db, redis_client, [failed_recorder])
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["services"] == {"recorder": "failed"}
    assert body["redis"]["ok"] is True and body["database"]["ok"] is True


async def test_health_degraded_when_redis_is_down(
    settings: Settings, bus: RedisBus, db: Database, dead_redis: aioredis.Redis
) -> None:
    response = await get_health(settings, bus, db, dead_redis, [])
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["redis"]["ok"] is False
    assert "Connection" in body["redis"]["error"]
    assert body["database"]["ok"] is True


async def test_health_degraded_when_database_is_not_started(
    settings: Settings, bus: RedisBus, redis_client: aioredis.Redis
) -> None:
    response = await get_health(settings, bus, Database(settings.effective_database_url), redis_client, [])
    assert response.status_code == 503
    assert response.json()["database"] == {
        "ok": False,
        "latency_ms": None,
        "error": response.json()["database"]["error"],
    }
    assert "not started" in response.json()["database"]["error"]


async def test_health_is_not_behind_auth(
    settings: Settings, bus: RedisBus, db: Database, redis_client: aioredis.Redis
) -> None:
    secured = settings.model_copy(update={"api_key": SecretStr("s3cret-key")})
    response = await get_health(secured, bus, db, redis_client, [])
    assert response.status_code == 200
    assert "s3cret-key" not in response.text
