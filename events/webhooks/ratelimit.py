"""Per-webhook rate limit: a fixed window counter in Redis (``INCR`` + ``EXPIRE NX`` in one round trip).

The key is ``<prefix>:webhooks:<id>:rate:<window start>``; a request over the limit gets 429 with
``Retry-After`` = seconds until the window ends. Every process serving the webhook shares the counter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from events.webhooks.model import RateLimit
from tripwire.errors import TripwireError
from tripwire.settings import StreamSettings

__all__ = ["RateLimited", "RateLimiter"]


class RateLimited(TripwireError):
    """Too many requests in the current window: HTTP 429 with ``retry_after_s``."""

    def __init__(self, limit: RateLimit, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            f"more than {limit.requests} requests in {limit.per_s} s; retry in {retry_after_s} s"
        )


@dataclass
class RateLimiter:
    """``await limiter.hit(webhook_id, limit)`` raises RateLimited when over the limit."""

    redis: aioredis.Redis
    streams: StreamSettings
    clock: Callable[[], float] = time.time

    async def hit(self, webhook_id: str, limit: RateLimit) -> None:
        now = self.clock()
        window = int(now // limit.per_s) * limit.per_s
        key = self.streams.key("webhooks", webhook_id, "rate", str(window))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, limit.per_s + 1, nx=True)
            count, _ = await pipe.execute()
        if int(count) > limit.requests:
            raise RateLimited(limit, max(1, math.ceil(window + limit.per_s - now)))
