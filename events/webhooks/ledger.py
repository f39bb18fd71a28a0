"""One Redis round trip per webhook request: the outcome is written by one Lua script, all or nothing.

1. ``accept`` runs, in order and atomically: the cache check (the webhooks change counter still holds the
   version the request was mapped with, else ``STALE`` and nothing is written), the rate-limit hit
   (``INCR`` the window counter, expire it once; over the limit: ``RATE_LIMITED``, nothing else written,
   as ratelimit.py), the replay claim (``SET NX EX``; taken: ``REPLAYED``), the ``XADD``s (the entry
   shape of ``RedisBus.publish``: one field ``data``, ``MAXLEN ~``) and the ``accepted`` counter
   (stats.py). When an ``XADD`` fails the claim is deleted before the error is returned, so the sender
   may retry the same signed request.
2. ``refuse`` runs the cache check, then the rate-limit hit (a request refused for another reason still
   counts, and one over the limit is refused with 429 whatever else was wrong, as when the hit came
   first), then the counters and the failures list of stats.py. It returns the status recorded.
3. The version check replaces a ``GET`` of the change counter before each request (WebhookCache note 1):
   a request mapped with a stale definition is mapped again after a reload, so a disabled, rotated or
   edited webhook still takes effect at once. ``expected=None`` skips it.
4. Scripts run with EVALSHA (redis-py loads them again after a ``SCRIPT FLUSH``); their keys are passed
   in KEYS.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio as aioredis

from events.webhooks.ratelimit import RateWindow
from events.webhooks.stats import KEEP, WebhookStats, failure_item
from tripwire.settings import StreamSettings

__all__ = ["Accepted", "Ledger", "Outcome"]

# KEYS: version, stream, stats, [rate], [claim]
# ARGV: expected version or '', rate limit or '', rate ttl, claim ttl or '', maxlen, payloads...
_ACCEPT = """
if ARGV[1] ~= '' and (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return {'stale'} end
local k = 4
if ARGV[2] ~= '' then
  local key = KEYS[k]
  k = k + 1
  local count = redis.call('INCR', key)
  if redis.call('TTL', key) == -1 then redis.call('EXPIRE', key, ARGV[3]) end
  if count > tonumber(ARGV[2]) then return {'rate'} end
end
local claim = false
if ARGV[4] ~= '' then
  claim = KEYS[k]
  if not redis.call('SET', claim, '1', 'NX', 'EX', ARGV[4]) then return {'replay'} end
end
local out = {'ok'}
for i = 6, #ARGV do
  local id = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'data', ARGV[i])
  if type(id) == 'table' and id.err then
    if claim then redis.call('DEL', claim) end
    return redis.error_reply(id.err)
  end
  out[#out + 1] = id
end
redis.call('HINCRBY', KEYS[3], 'accepted', #ARGV - 5)
return out
"""

# KEYS: version, stats, failures, [rate]
# ARGV: expected version or '', rate limit or '', rate ttl, status, failure item, failure item for 429, keep
_REFUSE = """
if ARGV[1] ~= '' and (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 'stale' end
local status, item = ARGV[4], ARGV[5]
if ARGV[2] ~= '' then
  local count = redis.call('INCR', KEYS[4])
  if redis.call('TTL', KEYS[4]) == -1 then redis.call('EXPIRE', KEYS[4], ARGV[3]) end
  if count > tonumber(ARGV[2]) then status, item = '429', ARGV[6] end
end
redis.call('HINCRBY', KEYS[2], 'rejected', 1)
redis.call('HINCRBY', KEYS[2], 'status:' .. status, 1)
redis.call('LPUSH', KEYS[3], item)
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
return status
"""


class Outcome(enum.Enum):
    ACCEPTED = "ok"
    STALE = "stale"
    RATE_LIMITED = "rate"
    REPLAYED = "replay"


@dataclass(frozen=True)
class Accepted:
    """What ``accept`` did: the outcome and, when accepted, the stream entry ids."""

    outcome: Outcome
    entry_ids: tuple[str, ...] = ()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Ledger:
    """Write a webhook request's outcome in one round trip (notes 1-4)."""

    def __init__(self, redis: aioredis.Redis, streams: StreamSettings, version_key: str) -> None:
        self._streams = streams
        self._stats = WebhookStats(redis, streams)
        self._version_key = version_key
        self._accept = redis.register_script(_ACCEPT)
        self._refuse = redis.register_script(_REFUSE)

    async def accept(
        self,
        webhook_id: str,
        stream: str,
        payloads: Sequence[bytes],
        *,
        expected: int | None,
        rate: RateWindow | None,
        claim: tuple[str, int] | None,
    ) -> Accepted:
        """Publish ``payloads`` unless stale, over the rate limit or replayed (note 1).

        ``claim`` is the replay key and its time to live in seconds.
        """
        keys = [self._version_key, stream, self._stats.keys(webhook_id)[0]]
        args: list[str | int | bytes] = ["" if expected is None else expected]
        if rate is not None:
            keys.append(rate.key)
            args += [rate.limit.requests, rate.ttl_s]
        else:
            args += ["", ""]
        if claim is not None:
            keys.append(claim[0])
            args.append(claim[1])
        else:
            args.append("")
        args.append(self._streams.maxlen)
        args.extend(payloads)
        reply = await self._accept(keys=keys, args=args)
        outcome = Outcome(_text(reply[0]))
        return Accepted(outcome, tuple(_text(i) for i in reply[1:]))

    async def refuse(
        self,
        webhook_id: str,
        status: int,
        reason: str,
        at: datetime,
        *,
        expected: int | None,
        rate: RateWindow | None,
    ) -> int | None:
        """Count a refusal and keep its reason (note 2): the status recorded, or None when stale."""
        stats, failures = self._stats.keys(webhook_id)
        keys = [self._version_key, stats, failures]
        args: list[str | int] = ["" if expected is None else expected]
        over = ""
        if rate is not None:
            keys.append(rate.key)
            args += [rate.limit.requests, rate.ttl_s]
            over = failure_item(429, str(rate.refusal()), at)
        else:
            args += ["", ""]
        args += [status, failure_item(status, reason, at), over, KEEP]
        reply = _text(await self._refuse(keys=keys, args=args))
        return None if reply == "stale" else int(reply)
