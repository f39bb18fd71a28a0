"""running(): Redis, bus, database and services start in order and stop in reverse; /health reports them."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from events.bus import RedisBus
from events.emit import EventEmitter
from events.history import EventFilter, query_events
from events.model import RESOURCE_ID
from tripwire.api.app import create_app
from tripwire.db import Database
from tripwire.errors import ConfigurationError, ServiceUnavailable
from tripwire.redis_embedded import redis_answers
from tripwire.runner import SERVICES, RunContext, ServiceFactory, running
from tripwire.services import ServiceState
from tripwire.settings import Settings

pytestmark = pytest.mark.redis


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Poll ``check`` until it holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.02)


class Probe:
    """A service that writes what happens to it into a shared log."""

    def __init__(
        self, name: str, log: list[str], *, fail_start: bool = False, hang_on_stop: bool = False
    ) -> None:
        self.name = name
        self.log = log
        self.fail_start = fail_start
        self.hang_on_stop = hang_on_stop
        self._state = ServiceState.CREATED

    @property
    def state(self) -> ServiceState:
        return self._state

    async def start(self) -> None:
        if self.fail_start:
            self._state = ServiceState.FAILED
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")
        self._state = ServiceState.RUNNING

    async def stop(self) -> None:
        self._state = ServiceState.STOPPING
        if self.hang_on_stop:
            await asyncio.Event().wait()
        self.log.append(f"stop {self.name}")
        self._state = ServiceState.STOPPED


def probes(log: list[str], **options: dict[str, bool]) -> dict[str, ServiceFactory]:
    def factory(name: str) -> ServiceFactory:
        return lambda ctx: Probe(name, log, **options.get(name, {}))

    return {name: factory(name) for name in ("first", "second", "third")}


async def test_services_start_in_order_and_stop_in_reverse(settings: Settings) -> None:
    log: list[str] = []
    async with running(settings, factories=probes(log)) as ctx:
        assert log == ["start first", "start second", "start third"]
        assert [s.name for s in ctx.services] == ["first", "second", "third"]
        assert all(s.state == ServiceState.RUNNING for s in ctx.services)
        assert await ctx.redis.ping()
    assert log[3:] == ["stop third", "stop second", "stop first"]


async def test_only_the_services_asked_for_run(settings: Settings) -> None:
    log: list[str] = []
    async with running(settings, services=["third", "first"], factories=probes(log)):
        pass
    assert log == ["start third", "start first", "stop first", "stop third"]


async def test_a_failed_start_stops_what_already_started(settings: Settings) -> None:
    log: list[str] = []
    with pytest.raises(RuntimeError, match="second cannot start"):
        async with running(settings, factories=probes(log, second={"fail_start": True})):
            pytest.fail("must not get here")
    assert log == ["start first", "stop first"]


async def test_a_service_stuck_in_stop_does_not_block_the_others(settings: Settings) -> None:
    log: list[str] = []
    async with running(settings, factories=probes(log, second={"hang_on_stop": True}), stop_timeout_s=0.2):
        pass
    assert log[3:] == ["stop third", "stop first"]


async def test_an_unknown_service_is_named(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown service 'evaluatr': choose from recorder"):
        async with running(settings, services=["evaluatr"]):
            pass


async def test_a_configured_unreachable_redis_fails_clearly(settings: Settings, nobody_url: str) -> None:
    broken = settings.model_copy(update={"redis_url": nobody_url})
    with pytest.raises(ServiceUnavailable, match=rf"cannot reach Redis at {nobody_url}"):
        async with running(broken):
            pass


async def _recorded(ctx: RunContext, resource: str) -> bool:
    page = await query_events(ctx.db, EventFilter(resource=resource))
    return len(page.events) == 1


async def test_every_service_runs_by_default_and_health_reports_it(settings: Settings) -> None:
    assert "recorder" in SERVICES
    async with running(settings) as ctx:
        assert [s.name for s in ctx.services] == list(SERVICES)
        event = await EventEmitter(ctx.bus, settings).emit_event(
            event="tripwire.flow-run.Failed", resource={RESOURCE_ID: "run-1"}
        )
        await eventually(lambda: _recorded(ctx, "run-1"))

        app = create_app(settings, bus=ctx.bus, db=ctx.db, redis=ctx.redis, services=ctx.services)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://tripwire"
        ) as http:
            health = (await http.get("/health")).json()
            one = await http.get(f"/api/events/{event.id}")
        assert health["status"] == "ok"
        assert health["services"] == dict.fromkeys(SERVICES, "running")
        assert one.status_code == 200
        recorder = ctx.services[0]
    assert recorder.state == ServiceState.STOPPED


async def test_without_redis_a_private_server_is_started_and_stopped(
    tmp_path: Path, settings: Settings, nobody_url: str
) -> None:
    embedded = settings.model_copy(update={"redis_url": None, "home": tmp_path / "home"})
    async with running(embedded, default_redis_url=nobody_url) as ctx:
        assert ctx.redis_url.startswith("unix://")
        await EventEmitter(ctx.bus, embedded).emit_event(event="demo.ping", resource={RESOURCE_ID: "r-1"})
        await eventually(lambda: _recorded(ctx, "r-1"))
    assert not await redis_answers(ctx.redis_url)
    assert any((tmp_path / "home" / "redis").glob("appendonly*"))


async def test_services_run_records_until_sigterm(settings: Settings, tmp_path: Path) -> None:
    """``tripwire services run recorder`` in its own process: records what another process emits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    env.update(
        TRIPWIRE_HOME=str(tmp_path / "home"),
        TRIPWIRE_REDIS_URL=str(settings.redis_url),
        TRIPWIRE_DATABASE_URL=str(settings.database_url),
        TRIPWIRE_STREAMS__PREFIX=settings.streams.prefix,
        TRIPWIRE_STREAMS__BLOCK_MS="50",
        COLUMNS="200",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tripwire", "services", "run", "recorder",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    log: list[str] = []
    try:

        async def started() -> None:
            while "started recorder" not in "".join(log):
                line = await proc.stderr.readline()
                if not line:
                    raise AssertionError("the service exited:\n" + "".join(log))
                log.append(line.decode())

        await asyncio.wait_for(started(), 30)
        client = aioredis.Redis.from_url(str(settings.redis_url))
        await EventEmitter(RedisBus(client, settings.streams), settings).emit_event(
            event="demo.elsewhere", resource={RESOURCE_ID: "r-9"}
        )
        await client.aclose()
        async with Database(str(settings.database_url)) as db:

            async def recorded() -> bool:
                return len((await query_events(db, EventFilter(resource="r-9"))).events) == 1

            await eventually(recorded)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        log.append((await proc.stderr.read()).decode())
        assert "stopped recorder" in "".join(log)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
