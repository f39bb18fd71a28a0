"""The intake's one round trip (events/webhooks/ledger.py) against a real Redis: every outcome writes all it
should and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from events.webhooks.ledger import Ledger, Outcome
from events.webhooks.model import RateLimit
from events.webhooks.ratelimit import rate_window
from events.webhooks.stats import WebhookStats
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

HOOK = "hook-1"
AT = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NOW_S = AT.timestamp() + 10  # 10 s into a 60 s window


def ledger(redis_client: aioredis.Redis, settings: Settings) -> Ledger:
    return Ledger(redis_client, settings.streams, settings.streams.key("webhooks", "version"))


async def test_accept_publishes_and_counts_in_one_go(
    redis_client: aioredis.Redis, settings: Settings
) -> None:
    done = await ledger(redis_client, settings).accept(
        HOOK, settings.streams.events, [b'{"a":1}', b'{"b":2}'], expected=0, rate=None, claim=None
    )
    assert done.outcome is Outcome.ACCEPTED and len(done.entry_ids) == 2
    entries = await redis_client.xrange(settings.streams.events)
    assert [f[b"data"] for _, f in entries] == [b'{"a":1}', b'{"b":2}']
    assert [i.decode() for i, _ in entries] == list(done.entry_ids)
    assert (await WebhookStats(redis_client, settings.streams).read(HOOK)).accepted == 2


async def test_a_stale_version_writes_nothing(redis_client: aioredis.Redis, settings: Settings) -> None:
    await redis_client.set(settings.streams.key("webhooks", "version"), 3)
    rate = rate_window(settings.streams, HOOK, RateLimit(requests=5, per_s=60), NOW_S)
    claim = (settings.streams.key("webhooks", HOOK, "seen", "sig"), 600)
    book = ledger(redis_client, settings)
    done = await book.accept(HOOK, settings.streams.events, [b"{}"], expected=2, rate=rate, claim=claim)
    assert done.outcome is Outcome.STALE
    refused = await book.refuse(HOOK, 401, "bad", AT, expected=2, rate=rate)
    assert refused is None
    assert await redis_client.exists(settings.streams.events, rate.key, claim[0]) == 0
    assert (await WebhookStats(redis_client, settings.streams).read(HOOK)).rejected == 0
    ok = await book.accept(HOOK, settings.streams.events, [b"{}"], expected=3, rate=rate, claim=claim)
    assert ok.outcome is Outcome.ACCEPTED


async def test_over_the_rate_limit_counts_but_publishes_nothing(
    redis_client: aioredis.Redis, settings: Settings
) -> None:
    rate = rate_window(settings.streams, HOOK, RateLimit(requests=1, per_s=60), NOW_S)
    assert rate.retry_after_s == 50
    book = ledger(redis_client, settings)
    first = await book.accept(HOOK, settings.streams.events, [b"{}"], expected=None, rate=rate, claim=None)
    claim = (settings.streams.key("webhooks", HOOK, "seen", "sig"), 600)
    second = await book.accept(HOOK, settings.streams.events, [b"{}"], expected=None, rate=rate, claim=claim)
    assert (first.outcome, second.outcome) == (Outcome.ACCEPTED, Outcome.RATE_LIMITED)
    assert await redis_client.xlen(settings.streams.events) == 1
    assert int(await redis_client.get(rate.key)) == 2
    assert 0 < await redis_client.ttl(rate.key) <= 61  # expires once, with the window
    assert not await redis_client.exists(claim[0])  # refused before the claim


async def test_a_refusal_over_the_rate_limit_is_recorded_as_429(
    redis_client: aioredis.Redis, settings: Settings
) -> None:
    rate = rate_window(settings.streams, HOOK, RateLimit(requests=1, per_s=60), NOW_S)
    book = ledger(redis_client, settings)
    assert await book.refuse(HOOK, 401, "the signature does not match", AT, expected=None, rate=rate) == 401
    assert await book.refuse(HOOK, 401, "the signature does not match", AT, expected=None, rate=rate) == 429
    counts = await WebhookStats(redis_client, settings.streams).read(HOOK)
    assert counts.rejected == 2 and counts.by_status == {"401": 1, "429": 1}
    assert counts.failures[0].status == 429 and "retry in 50 s" in counts.failures[0].reason
    assert counts.failures[1].reason == "the signature does not match"


async def test_a_replay_is_refused_and_a_failed_publish_releases_the_claim(
    redis_client: aioredis.Redis, settings: Settings
) -> None:
    book = ledger(redis_client, settings)
    claim = (settings.streams.key("webhooks", HOOK, "seen", "sig"), 600)
    await redis_client.set(settings.streams.events, "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await book.accept(HOOK, settings.streams.events, [b"{}"], expected=None, rate=None, claim=claim)
    assert not await redis_client.exists(claim[0])  # released: the sender may retry
    assert (await WebhookStats(redis_client, settings.streams).read(HOOK)).accepted == 0
    await redis_client.delete(settings.streams.events)
    first = await book.accept(HOOK, settings.streams.events, [b"{}"], expected=None, rate=None, claim=claim)
    again = await book.accept(HOOK, settings.streams.events, [b"{}"], expected=None, rate=None, claim=claim)
    assert (first.outcome, again.outcome) == (Outcome.ACCEPTED, Outcome.REPLAYED)
    assert await redis_client.xlen(settings.streams.events) == 1
    assert 0 < await redis_client.ttl(claim[0]) <= 600
