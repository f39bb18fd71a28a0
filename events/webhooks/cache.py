"""WebhookCache: slug -> compiled webhook (and its secret) in process, checked against the store's counter.

1. Each lookup reads the Redis change counter (one GET); when it moved, every enabled webhook is reloaded
   from SQL and compiled once. A disabled, deleted or rotated webhook stops answering at once. ``peek``
   answers from memory with the counter the answer was loaded at, for callers that check the counter
   in the same round trip as their writes (the intake: events/webhooks/ledger.py).
2. Secrets are read from their blocks (decrypted) on first use and kept for ``secret_ttl_s``: a secret
   changed in its block takes effect within that time (or at once, with any webhook change).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from blocks.store import BlockStore
from blocks.types import Secret
from events.webhooks.model import CompiledWebhook
from events.webhooks.store import WebhookStore
from tripwire.errors import ConfigurationError, NotFound

__all__ = ["WebhookCache"]


class WebhookCache:
    """Look webhooks up by slug and read their secrets, cheaply (notes 1-2)."""

    def __init__(
        self,
        store: WebhookStore,
        blocks: Callable[[], BlockStore],
        *,
        secret_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._blocks = blocks
        self._block_store: BlockStore | None = None
        self._ttl = secret_ttl_s
        self._clock = clock
        self._version = -1
        self._by_slug: dict[str, CompiledWebhook] = {}
        self._secrets: dict[str, tuple[float, str]] = {}
        self._lock = asyncio.Lock()

    def peek(self, slug: str) -> tuple[CompiledWebhook | None, int]:
        """The webhook as last loaded and the change counter it was loaded at, without a round trip (-1
        before the first load). The caller checks the counter later (events/webhooks/ledger.py note 3)."""
        return self._by_slug.get(slug), self._version

    async def lookup(self, slug: str) -> CompiledWebhook | None:
        """The enabled webhook with this slug, or None (unknown and disabled look the same)."""
        version = await self._store.changes_version()
        if version != self._version:
            async with self._lock:
                if version != self._version:
                    stored = await self._store.enabled()
                    self._by_slug = {s.slug: s.compiled() for s in stored}
                    self._secrets.clear()
                    self._version = version
        return self._by_slug.get(slug)

    async def secret(self, ref: str) -> str:
        """The value of the secret block ``ref``; ConfigurationError when it is missing or not a secret."""
        now = self._clock()
        cached = self._secrets.get(ref)
        if cached is not None and cached[0] > now:
            return cached[1]
        if self._block_store is None:
            self._block_store = self._blocks()
        try:
            block = await self._block_store.get(ref)
        except NotFound:
            raise ConfigurationError(f"the webhook's secret block {ref!r} does not exist") from None
        if not isinstance(block, Secret):
            raise ConfigurationError(f"the webhook's secret block {ref!r} is not a secret block")
        value = block.value.get_secret_value()
        self._secrets[ref] = (now + self._ttl, value)
        return value
