"""The Bus port in memory: consumer groups, pending entries, reclaim and dead letters, without Redis.

It mirrors Redis Streams where Tripwire relies on them (per-group cursors, a pending list with delivery
counts and idle times, XAUTOCLAIM-style reclaim, MAXLEN trimming) and runs the same consumer loop as
``RedisBus``, so code that only needs a bus can be unit-tested with it. Idle times use an injectable clock
(seconds, monotonic).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from events.bus import GroupConsumer, check_payloads, dead_letter_fields, dead_letter_stream
from events.ports import Handler, StreamEntry
from tripwire.settings import StreamSettings

__all__ = ["MemoryBus", "MemoryConsumer", "MissingGroup"]

EntryKey = tuple[int, int]


class MissingGroup(LookupError):
    """The stream or the consumer group does not exist (Redis: NOGROUP)."""


def _key(entry_id: str) -> EntryKey:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _id(key: EntryKey) -> str:
    return f"{key[0]}-{key[1]}"


@dataclass
class _Pending:
    consumer: str
    delivered_at: float
    deliveries: int


@dataclass
class _Group:
    cursor: EntryKey
    pending: dict[str, _Pending] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)  # consumer -> last read or claim


@dataclass
class _Stream:
    keys: list[EntryKey] = field(default_factory=list)
    fields: dict[EntryKey, dict[str, bytes]] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    last: EntryKey = (0, 0)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryBus:
    """The Bus port in process memory; ``clock`` (seconds) drives idle times and reclaim pacing."""

    def __init__(self, streams: StreamSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.streams = streams
        self.clock = clock
        self._data: dict[str, _Stream] = {}
        self._consumers: list[MemoryConsumer] = []

    # -- the Bus port ----------------------------------------------------------------------------------------
    async def publish(self, stream: str, payloads: Sequence[bytes]) -> list[str]:
        """Append every payload (all or nothing); returns the entry ids in order."""
        if not payloads:
            return []
        check_payloads(payloads)
        return [self._append(stream, {"data": bytes(p)}, self.streams.maxlen) for p in payloads]

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """Create the group (and the stream) if missing; "0" reads the backlog, "$" only new entries."""
        s = self._data.setdefault(stream, _Stream())
        if group not in s.groups:
            s.groups[group] = _Group(cursor=s.last if start_id == "$" else _key(start_id))

    def consumer(
        self, stream: str, group: str, name: str, handler: Handler, *, batch_size: int | None = None
    ) -> MemoryConsumer:
        """A consumer of ``stream`` in ``group``; call ``start()`` or use ``async with``."""
        consumer = MemoryConsumer(self, stream, group, name, handler, batch_size=batch_size)
        self._consumers.append(consumer)
        return consumer

    async def dead_letters(self, stream: str, count: int = 100) -> list[tuple[str, dict[str, str]]]:
        """The oldest ``count`` entries of ``<stream>:dead``."""
        s = self._data.get(dead_letter_stream(stream))
        if s is None:
            return []
        return [
            (_id(k), {n: v.decode(errors="replace") for n, v in s.fields[k].items()}) for k in s.keys[:count]
        ]

    async def trim_idle_consumers(self, stream: str, group: str, idle_ms: int) -> list[str]:
        """Forget consumers with nothing pending and idle longer than ``idle_ms``."""
        s = self._data.get(stream)
        g = s.groups.get(group) if s else None
        if g is None:
            return []
        busy = {p.consumer for p in g.pending.values()}
        now = self.clock()
        removed = [c for c, t in g.seen.items() if c not in busy and (now - t) * 1000 > idle_ms]
        for c in removed:
            del g.seen[c]
        return removed

    async def close(self) -> None:
        """Stop the consumers this bus made that are still running."""
        consumers, self._consumers = self._consumers, []
        for consumer in reversed(consumers):
            await consumer.stop()

    # -- inspection and mishaps, for tests -------------------------------------------------------------------
    def length(self, stream: str) -> int:
        """Number of entries in the stream (XLEN)."""
        s = self._data.get(stream)
        return len(s.keys) if s else 0

    def read(self, stream: str, count: int | None = None) -> list[StreamEntry]:
        """The oldest ``count`` entries, outside any group (XRANGE)."""
        s = self._data.get(stream)
        keys = s.keys[:count] if s else []
        return [StreamEntry(_id(k), s.fields[k].get("data", b"")) for k in keys] if s else []

    def pending(self, stream: str, group: str) -> dict[str, int]:
        """Pending entry id -> delivery count (XPENDING)."""
        g = self._group(stream, group)
        return {i: p.deliveries for i, p in g.pending.items()}

    def trim(self, stream: str, maxlen: int) -> None:
        """Keep only the newest ``maxlen`` entries (XTRIM MAXLEN =), pending or not."""
        s = self._data.get(stream)
        if s is not None and len(s.keys) > maxlen:
            drop = len(s.keys) - maxlen
            for k in s.keys[:drop]:
                del s.fields[k]
            del s.keys[:drop]

    def delete(self, stream: str) -> None:
        """Delete the stream and its groups (DEL)."""
        s = self._data.pop(stream, None)
        if s is not None:
            s.wakeup.set()

    # -- primitives used by MemoryConsumer -------------------------------------------------------------------
    def _append(self, stream: str, fields: dict[str, bytes], maxlen: int) -> str:
        s = self._data.setdefault(stream, _Stream())
        ms = max(int(time.time() * 1000), s.last[0])
        s.last = (ms, s.last[1] + 1 if ms == s.last[0] else 0)
        s.keys.append(s.last)
        s.fields[s.last] = fields
        self.trim(stream, maxlen)
        s.wakeup.set()
        s.wakeup = asyncio.Event()
        return _id(s.last)

    def _group(self, stream: str, group: str) -> _Group:
        s = self._data.get(stream)
        g = s.groups.get(group) if s else None
        if g is None:
            raise MissingGroup(f"NOGROUP no such stream {stream!r} or consumer group {group!r}")
        return g

    async def _read_new(self, stream: str, group: str, consumer: str) -> list[StreamEntry]:
        deadline = time.monotonic() + self.streams.block_ms / 1000
        while True:
            g = self._group(stream, group)
            s = self._data[stream]
            g.seen[consumer] = self.clock()
            start = bisect.bisect_right(s.keys, g.cursor)
            keys = s.keys[start : start + self.streams.batch_size]
            remaining_s = deadline - time.monotonic()
            if keys or remaining_s <= 0:
                break
            try:
                await asyncio.wait_for(s.wakeup.wait(), remaining_s)
            except TimeoutError:
                pass
        now = self.clock()
        entries = []
        for k in keys:
            g.pending[_id(k)] = _Pending(consumer, now, 1)
            entries.append(StreamEntry(_id(k), s.fields[k].get("data", b"")))
        if keys:
            g.cursor = keys[-1]
        return entries

    def _claim(
        self, stream: str, group: str, consumer: str, cursor: str, count: int
    ) -> tuple[str, list[StreamEntry], list[str]]:
        g = self._group(stream, group)
        s = self._data[stream]
        now = self.clock()
        g.seen[consumer] = now
        start = _key(cursor)
        candidates = sorted(k for k in map(_key, g.pending) if k >= start)
        claimed: list[StreamEntry] = []
        deleted: list[str] = []
        for n, k in enumerate(candidates):
            if len(claimed) == count:
                return _id(candidates[n]), claimed, deleted
            entry_id = _id(k)
            p = g.pending[entry_id]
            if (now - p.delivered_at) * 1000 < self.streams.reclaim_idle_ms:
                continue
            if k not in s.fields:
                del g.pending[entry_id]
                deleted.append(entry_id)
                continue
            p.consumer, p.delivered_at, p.deliveries = consumer, now, p.deliveries + 1
            claimed.append(StreamEntry(entry_id, s.fields[k].get("data", b""), p.deliveries))
        return "0-0", claimed, deleted

    def _ack(self, stream: str, group: str, ids: Sequence[str], forget_failures: bool) -> None:
        g = self._group(stream, group)
        for i in ids:
            g.pending.pop(i, None)
            if forget_failures:
                g.failures.pop(i, None)


class MemoryConsumer(GroupConsumer):
    """A GroupConsumer on a MemoryBus."""

    def __init__(
        self,
        bus: MemoryBus,
        stream: str,
        group: str,
        name: str,
        handler: Handler,
        *,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(stream, group, name, handler, bus.streams, batch_size)
        self._bus = bus

    def _now(self) -> float:
        return self._bus.clock()

    def _is_missing_group(self, exc: Exception) -> bool:
        return isinstance(exc, MissingGroup)

    async def _ensure_group(self) -> None:
        await self._bus.ensure_group(self.stream, self.group)

    async def _read_new(self) -> list[StreamEntry]:
        return await self._bus._read_new(self.stream, self.group, self.name)

    async def _ack(self, ids: list[str], *, forget_failures: bool) -> None:
        self._bus._ack(self.stream, self.group, ids, forget_failures)

    async def _claim(self, cursor: str, count: int) -> tuple[str, list[StreamEntry], list[str]]:
        return self._bus._claim(self.stream, self.group, self.name, cursor, count)

    async def _record_failure(self, ids: list[str], reason: str) -> None:
        self._bus._group(self.stream, self.group).failures.update(dict.fromkeys(ids, reason))

    async def _failure_reasons(self, ids: list[str]) -> dict[str, str]:
        failures = self._bus._group(self.stream, self.group).failures
        return {i: failures[i] for i in ids if i in failures}

    async def _dead_letter(self, entries: list[StreamEntry], reasons: dict[str, str]) -> None:
        self._bus._group(self.stream, self.group)  # NOGROUP before anything changes, like the MULTI
        for e in entries:
            fields = dead_letter_fields(e, self.group, reasons.get(e.id))
            encoded = {k: v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
            self._bus._append(dead_letter_stream(self.stream), encoded, self._bus.streams.maxlen)
        self._bus._ack(self.stream, self.group, [e.id for e in entries], forget_failures=True)
