"""Fixtures for the action runner: real Redis, a SQLite database, a block store, local receivers.

``Firings`` plays the firings relay for a stored automation: it records the events in history and the
firing in SQL, and publishes the action messages exactly as ``triggers.outbox`` does.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from apprise.plugins.slack import NotifySlack

from actions.runner import ActionRunnerService
from blocks.crypto import Cipher
from blocks.store import BlockStore
from events.bus import RedisBus
from events.model import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE, Event
from events.recorder import Recorder
from tests.actions.receivers import HttpReceiver, SmtpReceiver
from triggers.firings import FiringStore
from triggers.models import Automation
from triggers.outbox import action_messages, outbox_message
from triggers.outcomes import Firing, Resolution
from triggers.store import AutomationStore
from tripwire.db import Database
from tripwire.settings import ActionSettings, Settings

__all__ = ["Firings", "eventually", "failed_run"]


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    """Poll ``check`` until it holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.02)


def failed_run(deployment: str = "etl", run: int = 1) -> Event:
    """A flow run of ``deployment`` failed."""
    return Event(
        event="tripwire.flow-run.Failed",
        resource={RESOURCE_ID: f"tripwire.flow-run.{deployment}-{run}", RESOURCE_NAME: f"run {run}"},
        related=[{RESOURCE_ID: f"tripwire.deployment.{deployment}", RESOURCE_ROLE: "deployment"}],
        payload={"run": run},
    )


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with quick retries and short waits."""
    return settings.model_copy(
        update={"actions": ActionSettings(backoff_s=0.01, backoff_max_s=0.05, timeout_s=10, event_wait_s=2)}
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.effective_database_url)
    await database.start()
    yield database
    await database.stop()


@pytest.fixture
async def bus(redis_client: aioredis.Redis, settings: Settings) -> AsyncIterator[RedisBus]:
    bus = RedisBus(redis_client, settings.streams)
    yield bus
    await bus.close()


@pytest.fixture
def cipher() -> Cipher:
    return Cipher.generate()


@pytest.fixture
def blocks(db: Database, cipher: Cipher) -> BlockStore:
    return BlockStore(db, cipher)


@pytest.fixture
def automations(db: Database, redis_client: aioredis.Redis, settings: Settings) -> AutomationStore:
    return AutomationStore(db, redis_client, settings.streams)


@pytest.fixture
def make_runner(
    bus: RedisBus, redis_client: aioredis.Redis, db: Database, settings: Settings, blocks: BlockStore
) -> Callable[..., ActionRunnerService]:
    def make(
        name: str = "r1",
        *,
        store: BlockStore | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease_s: float = 30.0,
        **options: Any,
    ) -> ActionRunnerService:
        """A runner named ``name``; ``options`` override ``settings.actions``."""
        config = settings.model_copy(update={"actions": settings.actions.model_copy(update=options)})
        return ActionRunnerService(
            bus=bus, redis=redis_client, db=db, settings=config, consumer=name, blocks=store or blocks,
            clock=clock, lease_s=lease_s,
        )  # fmt: skip

    return make


@pytest.fixture
async def runner(make_runner: Callable[..., ActionRunnerService]) -> AsyncIterator[ActionRunnerService]:
    async with make_runner() as service:
        yield service


class Firings:
    """Fires stored automations the way the evaluator and the firings relay do."""

    def __init__(
        self, db: Database, redis: aioredis.Redis, settings: Settings, automations: AutomationStore
    ) -> None:
        self.db = db
        self.redis = redis
        self.settings = settings
        self.automations = automations

    async def store(self, document: dict[str, Any]) -> Automation:
        return (await self.automations.create(Automation.model_validate(document))).automation

    async def fire(
        self, automation: Automation, events: list[Event] | None = None, labels: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Record ``events`` and a firing of ``automation`` caused by them; publish its action messages."""
        events = events if events is not None else [failed_run()]
        await Recorder(self.db).record(events)
        firing = Firing(
            id=uuid.uuid4(),
            automation_id=automation.id,
            trigger_path="",
            labels=labels if labels is not None else {"related:deployment:tripwire.resource.id": "etl"},
            event_id=events[-1].id if events else None,
            event_ids=tuple(e.id for e in events),
            fire_time=datetime.now(UTC),
            processing=1,
            record_key="k",
        )
        return await self._publish(outbox_message(automation, firing))

    async def resolve(self, automation: Automation, labels: dict[str, str] | None = None) -> dict[str, Any]:
        """A resolution of ``automation`` (a quiet window passed): publish its actions_on_resolve."""
        resolution = Resolution(
            id=uuid.uuid4(),
            automation_id=automation.id,
            trigger_path="",
            labels=labels or {},
            event_id=None,
            resolve_time=datetime.now(UTC),
            processing=2,
            firing_id=None,
            firings=1,
            record_key="k",
        )
        return await self._publish(outbox_message(automation, resolution))

    async def _publish(self, raw: bytes) -> dict[str, Any]:
        doc = json.loads(raw)
        await FiringStore(self.db).record_outbox([doc])
        for message in action_messages(doc):
            await self.redis.xadd(self.settings.streams.actions, {"data": message})
        return doc


@pytest.fixture
def firings(
    db: Database, redis_client: aioredis.Redis, settings: Settings, automations: AutomationStore
) -> Firings:
    return Firings(db, redis_client, settings, automations)


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as server:
        yield server


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver() as server:
        yield server


@pytest.fixture
def slack(receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> HttpReceiver:
    """apprise's real Slack plugin, its webhook endpoint pointed at the local receiver (TECHNOTES §5)."""
    monkeypatch.setattr(NotifySlack, "webhook_url", f"{receiver.url}/slack/services")
    return receiver
