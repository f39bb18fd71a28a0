"""An action runner that freezes at a chosen point, to be killed with SIGKILL by test_crash.py.

Usage: python tests/actions/runner_proc.py MODE MARKER_KEY   (settings from TRIPWIRE_* variables)
MODE ``before``: freeze when a batch is received, before running it. MODE ``after``: run the batch (the
action's side effect, its result, its done key) and freeze before the consumer acknowledges it. Either
way MARKER_KEY is set in Redis when the process reaches that point.
"""

from __future__ import annotations

import asyncio
import sys

from actions.runner import ActionRunnerService
from events.bus import RedisBus, RedisConsumer, connect_redis
from events.ports import Handler, StreamEntry
from tripwire.db import Database
from tripwire.settings import Settings


class FreezingBus(RedisBus):
    """A RedisBus whose consumers freeze before or after the handler, never acknowledging."""

    def __init__(self, *args: object, mode: str, marker: str) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.mode = mode
        self.marker = marker

    def consumer(self, stream: str, group: str, name: str, handler: Handler) -> RedisConsumer:
        async def freezing(entries: list[StreamEntry]) -> None:
            if self.mode == "after":
                await handler(entries)
            await self.client.set(self.marker, self.mode)
            await asyncio.Event().wait()  # the test kills us here

        return super().consumer(stream, group, name, freezing)


async def main(mode: str, marker: str) -> None:
    settings = Settings()
    client = await connect_redis(settings.effective_redis_url)
    db = Database(settings.effective_database_url)
    await db.start()
    bus = FreezingBus(client, settings.streams, mode=mode, marker=marker)
    runner = ActionRunnerService(bus=bus, redis=client, db=db, settings=settings, consumer="doomed")
    async with runner:
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
