"""Per-webhook counters and recent failures in Redis, for ``tripwire webhook inspect``.

``<prefix>:webhooks:<id>:stats`` is a hash (``accepted``, ``rejected``, ``status:<code>``);
``<prefix>:webhooks:<id>:failures`` a list of the newest ``KEEP`` failures, each
``{"at", "status", "reason"}``. Reasons are Tripwire's own messages (which header, which path, which
limit), never the request body, a header value or a secret. The intake writes the same keys inside its
one round trip per request (events/webhooks/ledger.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from tripwire.settings import StreamSettings

__all__ = ["KEEP", "Failure", "WebhookCounts", "WebhookStats", "failure_item"]

KEEP = 50
MAX_REASON = 500


class Failure(BaseModel):
    """One rejected request."""

    at: datetime
    status: int
    reason: str


class WebhookCounts(BaseModel):
    """What a webhook received: counts by outcome and the newest failures, newest first."""

    accepted: int = 0
    rejected: int = 0
    by_status: dict[str, int] = Field(default_factory=dict)
    failures: list[Failure] = Field(default_factory=list)


@dataclass
class WebhookStats:
    """Record outcomes of requests to a webhook and read them back."""

    redis: aioredis.Redis
    streams: StreamSettings

    def keys(self, webhook_id: str) -> tuple[str, str]:
        """The counters hash and the failures list of a webhook."""
        return (
            self.streams.key("webhooks", webhook_id, "stats"),
            self.streams.key("webhooks", webhook_id, "failures"),
        )

    async def accepted(self, webhook_id: str, n: int = 1) -> None:
        await self.redis.hincrby(self.keys(webhook_id)[0], "accepted", n)

    async def rejected(self, webhook_id: str, status: int, reason: str, at: datetime) -> None:
        stats, failures = self.keys(webhook_id)
        item = failure_item(status, reason, at)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(stats, "rejected", 1)
            pipe.hincrby(stats, f"status:{status}", 1)
            pipe.lpush(failures, item)
            pipe.ltrim(failures, 0, KEEP - 1)
            await pipe.execute()

    async def read(self, webhook_id: str, limit: int = 20) -> WebhookCounts:
        stats, failures = self.keys(webhook_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(stats)
            pipe.lrange(failures, 0, limit - 1)
            raw, items = await pipe.execute()
        counts: dict[str, int] = {_text(k): int(v) for k, v in raw.items()}
        return WebhookCounts(
            accepted=counts.get("accepted", 0),
            rejected=counts.get("rejected", 0),
            by_status={k.removeprefix("status:"): v for k, v in counts.items() if k.startswith("status:")},
            failures=[Failure.model_validate(json.loads(i)) for i in items],
        )

    async def forget(self, webhook_id: str) -> None:
        await self.redis.delete(*self.keys(webhook_id))


def failure_item(status: int, reason: str, at: datetime) -> str:
    """One entry of the failures list (the reason cut to MAX_REASON characters)."""
    return json.dumps({"at": at.isoformat(), "status": status, "reason": reason[:MAX_REASON]})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
