"""The event bus on Redis Streams: publish, consumer groups, reclaim, dead letters.

Why redis-py asyncio and not FastStream: TECHNOTES §1.3-1.4 measured redis-py XREADGROUP batches at 39k-132k
msg/s, while FastStream never re-reads its PEL, has a no-op nack and a ``last_id`` bug; so reclaim is ours.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from events.ports import Handler, StreamEntry
from tripwire.errors import ServiceUnavailable
from tripwire.services import ServiceState
from tripwire.settings import StreamSettings

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # hiredis comes with redis[hiredis], a dependency; without it redis-py packs
    _hiredis_pack = None

__all__ = [
    "GroupConsumer",
    "PackingConnection",
    "RedisBus",
    "RedisConsumer",
    "check_payloads",
    "connect_redis",
    "dead_letter_stream",
    "failures_key",
    "redact_url",
]

logger = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
REASON_MAX_CHARS = 1000
CLAIM_COUNT_MAX = 100
PUBLISH_CHUNK = 1000

# EVAL (not EVALSHA) inside MULTI: a script missing from the cache cannot fail one chunk of a transaction.
_XADD_MANY = """
local ids = {}
for i = 2, #ARGV do
  ids[i - 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[i])
end
return ids
"""


def dead_letter_stream(stream: str) -> str:
    """Where entries of ``stream`` go after too many deliveries."""
    return f"{stream}:dead"


def failures_key(stream: str, group: str) -> str:
    """Hash of entry id -> reason of the last handler failure, per group."""
    return f"{stream}:failures:{group}"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``****``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:****@{host}"))


def check_payloads(payloads: Sequence[bytes]) -> None:
    """Refuse the whole batch before anything is written when one payload is not bytes."""
    for i, payload in enumerate(payloads):
        if not isinstance(payload, bytes | bytearray | memoryview):
            kind = type(payload).__name__
            raise TypeError(f"payloads[{i}] is {kind}, expected bytes; nothing was published")


def failure_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:REASON_MAX_CHARS]


class PackingConnection(aioredis.Connection):
    """A TCP connection that packs commands with hiredis (C) instead of redis-py's asyncio Python packer.

    The evaluator's MGET of 2,000 keys packs in 0.14 ms instead of 1.3 ms, its commit of 1,000 values
    in 0.09 ms instead of 0.43 ms (redis-py's synchronous client already packs with hiredis; its asyncio
    client does not). Arguments other than str, bytes and int (floats, memoryviews, and the values
    redis-py refuses) go through redis-py's packer, unchanged.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if _hiredis_pack is None:
            return super().pack_command(*args)
        for arg in args:
            kind = type(arg)
            if kind is not bytes and kind is not str and kind is not int:
                return super().pack_command(*args)
        first = args[0]
        if isinstance(first, str):  # a command name with a literal argument, e.g. "CONFIG GET"
            if " " in first:
                args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        return [_hiredis_pack(args)]


async def connect_redis(url: str) -> aioredis.Redis:
    """A client for ``url`` that answered PING; raises ServiceUnavailable naming the URL when it cannot.

    Commands are retried 3 times on a dropped connection (``from_url`` alone does not retry), so a publish
    right after a server restart or CLIENT KILL reconnects instead of failing; longer outages surface.
    Plain ``redis://`` URLs get ``PackingConnection``s.
    """
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3)
    extra: dict[str, Any] = {}
    if urlsplit(url).scheme == "redis":  # not rediss:// (TLS) nor unix://
        extra["connection_class"] = PackingConnection
    client = aioredis.Redis.from_url(url, socket_connect_timeout=5, retry=retry, **extra)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise ServiceUnavailable(
            f"cannot reach Redis at {redact_url(url)}: {exc} — start redis-server or set TRIPWIRE_REDIS_URL"
        ) from exc
    return client


class GroupConsumer(ABC):
    """The consumer loop shared by RedisBus and MemoryBus; subclasses supply the stream primitives.

    1. Read up to ``batch_size`` new entries (">"), call the handler once, XACK the batch in one call
       (unless the handler returns True: it acknowledged them itself). When the handler raises, log it,
       keep the reason, and leave the entries pending.
    2. Every ``reclaim_idle_ms / 2``, claim entries idle longer than ``reclaim_idle_ms`` from any consumer
       of the group (crashed ones, our past self, failed batches). Entries delivered more than
       ``max_deliveries`` times go to ``<stream>:dead`` with the last failure reason; the others go to the
       handler one by one, so a poison entry cannot hold back its neighbours. Entries trimmed from the
       stream while pending are acked.
    3. Connection errors: log once per outage, back off (0.1 s .. 5 s, jitter), retry; a missing group is
       recreated. Nothing ends the loop except ``stop``.
    4. ``stop``: stop reading, let the in-flight handler finish within the drain timeout, then cancel it.
    """

    def __init__(
        self,
        stream: str,
        group: str,
        name: str,
        handler: Handler,
        streams: StreamSettings,
        batch_size: int | None = None,
    ) -> None:
        self.stream = stream
        self.group = group
        self.name = name
        self._handler = handler
        if batch_size is not None:
            streams = streams.model_copy(update={"batch_size": batch_size})
        self._settings = streams
        self._state = ServiceState.CREATED
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._waiting = False  # in XREADGROUP or a backoff sleep: stop() may cancel at once
        self._need_group = False
        self._errors = 0
        self._outage_since: float | None = None
        self._where = f"{stream} (group {group}, consumer {name})"
        self._log = {"stream": stream, "group": group, "consumer": name}

    # -- primitives ------------------------------------------------------------------------------------------
    @abstractmethod
    def _now(self) -> float:
        """Seconds on the clock that paces reclaim."""

    @abstractmethod
    async def _ensure_group(self) -> None: ...

    @abstractmethod
    async def _read_new(self) -> list[StreamEntry]:
        """Up to batch_size never-delivered entries, blocking up to block_ms."""

    @abstractmethod
    async def _ack(self, ids: list[str], *, forget_failures: bool) -> None: ...

    @abstractmethod
    async def _claim(self, cursor: str, count: int) -> tuple[str, list[StreamEntry], list[str]]:
        """Next cursor, entries idle > reclaim_idle_ms now ours (deliveries counted), and trimmed ids."""

    @abstractmethod
    async def _record_failure(self, ids: list[str], reason: str) -> None: ...

    @abstractmethod
    async def _failure_reasons(self, ids: list[str]) -> dict[str, str]: ...

    @abstractmethod
    async def _dead_letter(self, entries: list[StreamEntry], reasons: dict[str, str]) -> None:
        """Append to the dead-letter stream and ack, together."""

    def _is_outage(self, exc: Exception) -> bool:
        return False

    def _is_missing_group(self, exc: Exception) -> bool:
        return False

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def state(self) -> ServiceState:
        return self._state

    async def start(self) -> None:
        """Create the group if needed and start the loop in a task."""
        if self._task is not None and not self._task.done():
            return
        await self._ensure_group()
        self._stopping = False
        self._state = ServiceState.RUNNING
        self._task = asyncio.create_task(self._run(), name=f"consumer {self.stream} {self.group}/{self.name}")

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Stop reading; wait up to ``drain_timeout_s`` for the in-flight handler, then cancel it."""
        task = self._task
        if task is None or task.done():
            self._state = ServiceState.STOPPED
            return
        self._stopping = True
        self._state = ServiceState.STOPPING
        if self._waiting:
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=drain_timeout_s)
        if not done:
            msg = "%s: handler still busy after %.1f s; cancelled, its entries stay pending"
            logger.warning(msg, self._where, drain_timeout_s, extra=self._log)
            task.cancel()
            await asyncio.wait({task})
        self._state = ServiceState.STOPPED

    async def __aenter__(self) -> GroupConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the loop --------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        every_s = self._settings.reclaim_idle_ms / 2000
        next_reclaim = self._now()  # at once: pick up what a crashed past self left behind
        while not self._stopping:
            try:
                if self._need_group:
                    await self._ensure_group()
                    self._need_group = False
                if self._now() >= next_reclaim:
                    await self._reclaim()
                    next_reclaim = self._now() + every_s
                if self._stopping:
                    break
                self._waiting = True
                entries = await self._read_new()
                self._waiting = False
                self._recovered()
                if entries:
                    await self._handle_batch(entries)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._waiting = False
                await self._on_error(exc)

    async def _call(self, entries: list[StreamEntry]) -> tuple[Exception | None, bool]:
        """The handler's exception, if any, and whether it acknowledged the entries itself."""
        try:
            acked = await self._handler(entries)
        except Exception as exc:
            return exc, False
        return None, acked is True

    async def _handle_batch(self, entries: list[StreamEntry]) -> None:
        exc, acked = await self._call(entries)
        ids = [e.id for e in entries]
        if exc is None:
            if not acked:
                await self._ack(ids, forget_failures=False)
            return
        msg = "%s: handler failed on a batch of %d entries; left pending for retry"
        logger.warning(msg, self._where, len(entries), exc_info=exc, extra=self._log)
        await self._record_failure(ids, failure_reason(exc))

    async def _reclaim(self) -> None:
        cursor = "0-0"
        count = min(self._settings.batch_size, CLAIM_COUNT_MAX)
        while not self._stopping:
            cursor, entries, deleted = await self._claim(cursor, count)
            if deleted:
                msg = (
                    "%s: %d pending entries were trimmed from the stream before being processed; acked "
                    "them. Raise TRIPWIRE_STREAMS__MAXLEN above the worst backlog"
                )
                logger.warning(msg, self._where, len(deleted), extra=self._log)
                await self._ack(deleted, forget_failures=True)
            limit = self._settings.max_deliveries
            dead = [e for e in entries if e.deliveries > limit]
            if dead:
                await self._dead_letter(dead, await self._failure_reasons([e.id for e in dead]))
                msg = "%s: moved %d entries to %s after %d deliveries"
                where = dead_letter_stream(self.stream)
                logger.error(msg, self._where, len(dead), where, limit, extra=self._log)
            for entry in (e for e in entries if e.deliveries <= limit):
                if self._stopping:
                    return
                await self._retry(entry)
            if cursor == "0-0":
                return

    async def _retry(self, entry: StreamEntry) -> None:
        exc, _ = await self._call([entry])
        if exc is None:  # acked again even if the handler did: this also forgets the failure reason
            await self._ack([entry.id], forget_failures=True)
            return
        msg = "%s: handler failed on entry %s, delivery %d of %d"
        limit = self._settings.max_deliveries
        logger.warning(msg, self._where, entry.id, entry.deliveries, limit, exc_info=exc, extra=self._log)
        await self._record_failure([entry.id], failure_reason(exc))

    async def _on_error(self, exc: Exception) -> None:
        if self._is_missing_group(exc):
            msg = (
                "%s: the consumer group is missing (stream deleted or group destroyed, e.g. by FLUSHDB); "
                "recreating it from the start of the stream. If this repeats, find what deletes the keys "
                "under prefix %r"
            )
            logger.warning(msg, self._where, self._settings.prefix, extra=self._log)
            self._need_group = True  # recreated at the top of the loop; the read after it blocks, no spin
            return
        if self._is_outage(exc):
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                msg = "%s: lost Redis (%s); retrying with backoff up to %.0f s"
                logger.warning(msg, self._where, exc, BACKOFF_MAX_S, extra=self._log)
        else:
            logger.error("%s: unexpected error; retrying", self._where, exc_info=exc, extra=self._log)
        delay_s = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2**self._errors) * random.uniform(0.5, 1.0)
        self._errors = min(self._errors + 1, 16)
        self._waiting = True
        try:
            await asyncio.sleep(delay_s)
        finally:
            self._waiting = False

    def _recovered(self) -> None:
        self._errors = 0
        if self._outage_since is not None:
            down_s = time.monotonic() - self._outage_since
            logger.info("%s: reconnected to Redis after %.1f s", self._where, down_s, extra=self._log)
            self._outage_since = None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _data(fields: dict[Any, Any]) -> bytes:
    value = fields.get(b"data", fields.get("data", b""))
    return value.encode() if isinstance(value, str) else bytes(value)


class RedisConsumer(GroupConsumer):
    """A GroupConsumer on Redis Streams (XREADGROUP, XACK, XAUTOCLAIM + XPENDING, MULTI to the DLQ)."""

    def __init__(
        self,
        bus: RedisBus,
        stream: str,
        group: str,
        name: str,
        handler: Handler,
        *,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(stream, group, name, handler, bus.streams, batch_size)
        self._bus = bus
        self._client = bus.client
        self._failures = failures_key(stream, group)

    def _now(self) -> float:
        return time.monotonic()

    def _is_outage(self, exc: Exception) -> bool:
        return isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)

    def _is_missing_group(self, exc: Exception) -> bool:
        return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")

    async def _ensure_group(self) -> None:
        await self._bus.ensure_group(self.stream, self.group)

    async def _read_new(self) -> list[StreamEntry]:
        reply = await self._client.xreadgroup(
            self.group,
            self.name,
            {self.stream: ">"},
            count=self._settings.batch_size,
            block=self._settings.block_ms,
        )
        streams = reply.items() if isinstance(reply, dict) else (reply or [])
        return [StreamEntry(_text(i), _data(f)) for _, entries in streams for i, f in entries]

    async def _ack(self, ids: list[str], *, forget_failures: bool) -> None:
        if not forget_failures:
            await self._client.xack(self.stream, self.group, *ids)
            return
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, *ids)
            pipe.hdel(self._failures, *ids)
            await pipe.execute()

    async def _claim(self, cursor: str, count: int) -> tuple[str, list[StreamEntry], list[str]]:
        reply = await self._client.xautoclaim(
            self.stream,
            self.group,
            self.name,
            min_idle_time=self._settings.reclaim_idle_ms,
            start_id=cursor,
            count=count,
        )
        next_cursor, claimed = _text(reply[0]), reply[1]
        deleted = [_text(i) for i in reply[2]] if len(reply) > 2 else []
        deleted += [_text(i) for i, f in claimed if i is not None and f is None]  # Redis 6.2 shape
        found = [(_text(i), f) for i, f in claimed if i is not None and f is not None]
        if not found:
            return next_cursor, [], deleted
        async with self._client.pipeline(transaction=False) as pipe:
            for entry_id, _ in found:
                pipe.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
            details = await pipe.execute()
        entries = [
            StreamEntry(entry_id, _data(fields), int(info[0]["times_delivered"]))
            for (entry_id, fields), info in zip(found, details, strict=True)
            if info and _text(info[0]["consumer"]) == self.name  # acked or taken meanwhile: not ours
        ]
        return next_cursor, entries, deleted

    async def _record_failure(self, ids: list[str], reason: str) -> None:
        await self._client.hset(self._failures, mapping=dict.fromkeys(ids, reason))

    async def _failure_reasons(self, ids: list[str]) -> dict[str, str]:
        values = await self._client.hmget(self._failures, ids)
        return {i: _text(v) for i, v in zip(ids, values, strict=True) if v is not None}

    async def _dead_letter(self, entries: list[StreamEntry], reasons: dict[str, str]) -> None:
        ids = [e.id for e in entries]
        async with self._client.pipeline(transaction=True) as pipe:
            for e in entries:
                pipe.xadd(
                    dead_letter_stream(self.stream),
                    dead_letter_fields(e, self.group, reasons.get(e.id)),
                    maxlen=self._settings.maxlen,
                    approximate=True,
                )
            pipe.xack(self.stream, self.group, *ids)
            pipe.hdel(self._failures, *ids)
            await pipe.execute()


def dead_letter_fields(entry: StreamEntry, group: str, reason: str | None) -> dict[str, bytes | str]:
    """Fields of a dead-letter entry; ``deliveries`` counts deliveries to a handler."""
    handled = entry.deliveries - 1
    return {
        "data": entry.data,
        "reason": reason or f"not acknowledged after {handled} deliveries (consumer crashed or was stopped)",
        "group": group,
        "origin_id": entry.id,
        "deliveries": str(handled),
    }


class RedisBus:
    """The Bus port on Redis Streams (one field ``data`` per entry); the client stays open on close()."""

    def __init__(self, client: aioredis.Redis, streams: StreamSettings) -> None:
        self.client = client
        self.streams = streams
        self._consumers: list[RedisConsumer] = []

    async def publish(self, stream: str, payloads: Sequence[bytes]) -> list[str]:
        """Append every payload in one MULTI/EXEC (XADD MAXLEN ~); returns the entry ids in order.

        The XADDs run inside EVAL calls of up to PUBLISH_CHUNK payloads each, queued in one MULTI: the same
        atomicity as one XADD per payload in MULTI, 5x faster because redis-py packs one command per chunk.
        """
        if not payloads:
            return []
        check_payloads(payloads)
        async with self.client.pipeline(transaction=True) as pipe:
            for start in range(0, len(payloads), PUBLISH_CHUNK):
                chunk = payloads[start : start + PUBLISH_CHUNK]
                pipe.eval(_XADD_MANY, 1, stream, self.streams.maxlen, *chunk)
            replies = await pipe.execute()
        return [_text(i) for ids in replies for i in ids]

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """XGROUP CREATE ... MKSTREAM, ignoring BUSYGROUP; "0" makes a new group read the existing backlog."""
        try:
            await self.client.xgroup_create(stream, group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    def consumer(
        self, stream: str, group: str, name: str, handler: Handler, *, batch_size: int | None = None
    ) -> RedisConsumer:
        """A consumer of ``stream`` in ``group``; call ``start()`` or use ``async with``."""
        consumer = RedisConsumer(self, stream, group, name, handler, batch_size=batch_size)
        self._consumers.append(consumer)
        return consumer

    async def dead_letters(self, stream: str, count: int = 100) -> list[tuple[str, dict[str, str]]]:
        """The oldest ``count`` entries of ``<stream>:dead``."""
        entries = await self.client.xrange(dead_letter_stream(stream), count=count)
        return [(_text(i), {_text(k): v.decode(errors="replace") for k, v in f.items()}) for i, f in entries]

    async def trim_idle_consumers(self, stream: str, group: str, idle_ms: int) -> list[str]:
        """XGROUP DELCONSUMER every consumer with nothing pending and idle longer than ``idle_ms``."""
        try:
            consumers = await self.client.xinfo_consumers(stream, group)
        except ResponseError as exc:
            if str(exc).startswith("NOGROUP"):
                return []
            raise
        removed = []
        for info in consumers:
            if int(info["pending"]) == 0 and int(info["idle"]) > idle_ms:
                await self.client.xgroup_delconsumer(stream, group, info["name"])
                removed.append(_text(info["name"]))
        return removed

    async def close(self) -> None:
        """Stop the consumers this bus made that are still running (the client stays open)."""
        consumers, self._consumers = self._consumers, []
        for consumer in reversed(consumers):
            await consumer.stop()
