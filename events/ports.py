"""The bus port: what code that publishes or consumes stream entries relies on.

Two implementations: ``events.bus.RedisBus`` (Redis Streams) and ``events.memory.MemoryBus`` (tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Bus", "Consumer", "Handler", "StreamEntry"]


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry read from a stream: its id, its body, and how many times it was delivered."""

    id: str
    data: bytes
    deliveries: int = 1


Handler = Callable[[list[StreamEntry]], Awaitable[bool | None]]
"""Processes a batch. Returning acknowledges every entry; raising leaves them all pending (retried later,
dead-lettered after ``max_deliveries``). Returning True says the handler acknowledged the batch itself
(atomically with its own writes, e.g. in one Lua script): the consumer then spends no XACK on it."""


class Consumer(Protocol):
    """A running member of a consumer group; ``async with`` starts and stops it."""

    async def start(self) -> None: ...
    async def stop(self, drain_timeout_s: float = 5.0) -> None: ...
    async def __aenter__(self) -> Consumer: ...
    async def __aexit__(self, *exc: object) -> None: ...


class Bus(Protocol):
    async def publish(self, stream: str, payloads: Sequence[bytes]) -> list[str]:
        """Append every payload, all or nothing (one MULTI/EXEC); returns the entry ids in order."""
        ...

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """Create the consumer group (and the stream) if missing; idempotent."""
        ...

    def consumer(
        self, stream: str, group: str, name: str, handler: Handler, *, batch_size: int | None = None
    ) -> Consumer:
        """A consumer of ``stream`` in ``group``; blocking, reclaim and DLQ come from settings, and so does
        the batch size unless ``batch_size`` overrides it for this consumer."""
        ...

    async def dead_letters(self, stream: str, count: int = 100) -> list[tuple[str, dict[str, str]]]:
        """Entries of ``stream``'s dead-letter stream: (id, fields: data, reason, group, origin_id)."""
        ...

    async def close(self) -> None: ...
