"""A consumer that takes one batch and then hangs in its handler, to be killed with SIGKILL by test_bus.py.

Usage: python tests/events/bus_consumer_proc.py REDIS_URL PREFIX GROUP CONSUMER MARKER_KEY
It consumes ``<PREFIX>:events``; when its handler gets a batch it sets MARKER_KEY to the number of entries.
"""

from __future__ import annotations

import asyncio
import sys

from events.bus import RedisBus, connect_redis
from events.ports import StreamEntry
from tripwire.settings import StreamSettings


async def main(url: str, prefix: str, group: str, name: str, marker: str) -> None:
    client = await connect_redis(url)
    streams = StreamSettings(prefix=prefix, batch_size=1000, block_ms=50, reclaim_idle_ms=600_000)
    bus = RedisBus(client, streams)

    async def hang(entries: list[StreamEntry]) -> None:
        await client.set(marker, len(entries))
        await asyncio.Event().wait()  # never acks: the test kills us here

    async with bus.consumer(streams.events, group, name, hang):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
