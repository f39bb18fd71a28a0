"""A change counter in Redis: stores bump it on every change, readers poll it and reload when it moved."""

from __future__ import annotations

import redis.asyncio as aioredis

__all__ = ["ChangeCounter"]


class ChangeCounter:
    """``INCR`` on change, ``GET`` to poll: one cheap round trip tells a process its cache is stale."""

    def __init__(self, redis: aioredis.Redis, key: str) -> None:
        self._redis = redis
        self.key = key

    async def version(self) -> int:
        """The counter (0 before the first change)."""
        value = await self._redis.get(self.key)
        return int(value) if value is not None else 0

    async def bump(self) -> int:
        """Count one change; returns the new value."""
        return int(await self._redis.incr(self.key))
