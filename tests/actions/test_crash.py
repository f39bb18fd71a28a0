"""A runner killed with SIGKILL between receiving a message and acknowledging it: after a restart the
action has run exactly once (the receiver's count), whichever side of the side effect it died on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from actions.outcomes import EXECUTED
from actions.results import ActionResultStore
from actions.runner import ActionRunnerService
from blocks.crypto import Cipher
from blocks.store import BlockStore
from tests.actions.conftest import Firings, eventually
from tests.actions.receivers import HttpReceiver
from tests.actions.test_runner import an_automation, call_webhook, emitted, key_of, webhook_block
from tests.conftest import REPO
from tripwire.db import Database
from tripwire.settings import Settings

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PROC = Path(__file__).with_name("runner_proc.py")


def spawn(settings: Settings, mode: str, marker: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    env.update(
        PYTHONPATH=str(REPO),
        TRIPWIRE_HOME=str(settings.home),
        TRIPWIRE_REDIS_URL=str(settings.redis_url),
        TRIPWIRE_DATABASE_URL=str(settings.database_url),
        TRIPWIRE_STREAMS__PREFIX=settings.streams.prefix,
        TRIPWIRE_STREAMS__BLOCK_MS="50",
        TRIPWIRE_STREAMS__RECLAIM_IDLE_MS="600000",
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(PROC), mode, marker], env=env, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.mark.parametrize("mode", ["before", "after"])
async def test_a_runner_killed_before_acknowledging_runs_the_action_exactly_once(
    mode: str,
    make_runner: Callable[..., ActionRunnerService],
    firings: Firings,
    db: Database,
    receiver: HttpReceiver,
    redis_client: aioredis.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    blocks = BlockStore(db, Cipher.from_settings(settings))  # the key file both processes read
    ref = await webhook_block(blocks, receiver)
    doc = await firings.fire(await firings.store(an_automation("etl", call_webhook(ref))))
    marker = f"{settings.streams.prefix}:marker:{uuid.uuid4().hex}"
    proc = spawn(settings, mode, marker, tmp_path / "runner.log")
    try:

        async def frozen() -> bool:
            assert proc.poll() is None, (tmp_path / "runner.log").read_text()
            return await redis_client.get(marker) is not None

        await eventually(frozen, timeout_s=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert len(receiver.received("/hooks/ci")) == (1 if mode == "after" else 0)
    [group] = await redis_client.xinfo_groups(settings.streams.actions)
    assert group["pending"] == 1  # received, never acknowledged

    async with make_runner("restarted", store=blocks):

        async def acknowledged() -> bool:
            [group] = await redis_client.xinfo_groups(settings.streams.actions)
            return group["pending"] == 0

        await eventually(acknowledged)

    assert len(receiver.received("/hooks/ci")) == 1
    result = await ActionResultStore(db).get(key_of(doc))
    assert result is not None and result.status == "succeeded"
    assert len(await emitted(redis_client, settings, EXECUTED)) == 1
