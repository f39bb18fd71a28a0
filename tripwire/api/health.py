"""``GET /health``: are Redis, the database and the services of this process working? Not behind auth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from tripwire.db import Database
from tripwire.errors import ServiceUnavailable
from tripwire.services import Service, ServiceState

__all__ = ["DependencyHealth", "Health", "check_database", "check_health", "check_redis", "health_router"]

CHECK_TIMEOUT_S = 2.0


class DependencyHealth(BaseModel):
    """One dependency: does it answer, how fast, and if not, why."""

    ok: bool = Field(description="answered within the timeout")
    latency_ms: float | None = Field(None, description="round trip of the check")
    error: str | None = Field(None, description="why the check failed")


class Health(BaseModel):
    """The body of ``GET /health``."""

    status: str = Field(description="'ok' when everything works, otherwise 'degraded'")
    redis: DependencyHealth
    database: DependencyHealth
    services: dict[str, str] = Field(description="service name -> state; healthy when 'running'")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


async def check_redis(client: aioredis.Redis, timeout_s: float = CHECK_TIMEOUT_S) -> DependencyHealth:
    """PING Redis."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            await client.ping()
    except TimeoutError:
        return DependencyHealth(ok=False, error=f"no answer within {timeout_s:g} s")
    except (RedisError, OSError) as exc:
        return DependencyHealth(ok=False, error=_short(exc))
    return DependencyHealth(ok=True, latency_ms=round((time.perf_counter() - start) * 1000, 3))


async def check_database(db: Database, timeout_s: float = CHECK_TIMEOUT_S) -> DependencyHealth:
    """``SELECT 1`` on the database."""
    start = time.perf_counter()
    try:
        await db.ping(timeout_s)
    except ServiceUnavailable as exc:
        return DependencyHealth(ok=False, error=str(exc))
    except RuntimeError as exc:  # not started
        return DependencyHealth(ok=False, error=str(exc))
    return DependencyHealth(ok=True, latency_ms=round((time.perf_counter() - start) * 1000, 3))


async def check_health(client: aioredis.Redis, db: Database, services: Sequence[Service]) -> Health:
    """Check everything concurrently; ``status`` is 'ok' only when all of it is."""
    redis_health, db_health = await asyncio.gather(check_redis(client), check_database(db))
    states = {service.name: ServiceState(service.state).value for service in services}
    ok = redis_health.ok and db_health.ok and all(s == ServiceState.RUNNING for s in states.values())
    return Health(status="ok" if ok else "degraded", redis=redis_health, database=db_health, services=states)


def health_router() -> APIRouter:
    """The router serving ``GET /health``."""
    router = APIRouter(tags=["health"])

    @router.get(
        "/health",
        response_model=Health,
        summary="Health of Redis, the database and the services",
        responses={503: {"model": Health, "description": "something is not working"}},
    )
    async def health(request: Request) -> Any:
        state = request.app.state
        result = await check_health(state.redis, state.db, state.services)
        return JSONResponse(result.model_dump(mode="json"), status_code=200 if result.status == "ok" else 503)

    return router
