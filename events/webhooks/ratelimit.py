"""Per-webhook rate limit: a fixed window counter in Redis (``INCR`` + ``EXPIRE NX`` in one round trip).

The key is ``<prefix>:webhooks:<id>:rate:<window start>``; a request over the limit gets 429 with
``Retry-After`` = seconds until the window ends. Every process serving the webhook shares the counter.
``rate_window`` says which counter a request counts on; the intake counts it inside its one round trip
per request (events/webhooks/ledger.py), ``RateLimiter.hit`` on its own.
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

__all__ = ["RateLimited", "RateLimiter", "RateWindow", "rate_window"]


class RateLimited(TripwireError):
    """Too many requests in the current window: HTTP 429 with ``retry_after_s``."""

    def __init__(self, limit: RateLimit, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            f"more than {limit.requests} requests in {limit.per_s} s; retry in {retry_after_s} s"
        )


@dataclass(frozen=True)
class RateWindow:
    """The counter a request at some moment counts on, and what to answer when it is over the limit."""

    key: str
    limit: RateLimit
    ttl_s: int
    retry_after_s: int

    def refusal(self) -> RateLimited:
        return RateLimited(self.limit, self.retry_after_s)


def rate_window(streams: StreamSettings, webhook_id: str, limit: RateLimit, now: float) -> RateWindow:
    """The fixed window holding ``now`` (seconds since the epoch)."""
    window = int(now // limit.per_s) * limit.per_s
    key = streams.key("webhooks", webhook_id, "rate", str(window))
    return RateWindow(key, limit, limit.per_s + 1, max(1, math.ceil(window + limit.per_s - now)))


@dataclass
class RateLimiter:
    """``await limiter.hit(webhook_id, limit)`` raises RateLimited when over the limit."""

    redis: aioredis.Redis
    streams: StreamSettings
    clock: Callable[[], float] = time.time

    async def hit(self, webhook_id: str, limit: RateLimit) -> None:
        window = rate_window(self.streams, webhook_id, limit, self.clock())
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(window.key)
            pipe.expire(window.key, window.ttl_s, nx=True)
            count, _ = await pipe.execute()
        if int(count) > limit.requests:
            raise window.refusal()
