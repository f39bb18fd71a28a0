"""End to end, real processes: automations applied from files, events through the API, the evaluator in
one or several processes (one killed with SIGKILL), and a real-time proactive "no heartbeat" automation."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

import tripwire
from tests.conftest import REPO, RedisServer
from tests.engine import EngineProcess, ServiceProcess, await_condition, tripwire_env
from triggers.files import load_automations
from triggers.store import AutomationStore
from tripwire.db import Database
from tripwire.settings import Settings

pytestmark = [pytest.mark.redis, pytest.mark.slow]

THREE_FAILURES = REPO / "examples" / "automations" / "three_failures.json"
NAME = "etl keeps failing"
KEY = "related:deployment:tripwire.resource.id"
QUIET = "worker went quiet"
FAST_RECLAIM = {"TRIPWIRE_STREAMS__RECLAIM_IDLE_MS": "1000"}


def failure(deployment: str, n: int) -> dict[str, Any]:
    return {
        "event": "tripwire.flow-run.Failed",
        "resource": {"tripwire.resource.id": f"tripwire.flow-run.{deployment}-{n}"},
        "related": [{"tripwire.resource.id": deployment, "tripwire.resource.role": "deployment"}],
    }


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tripwire", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class Streams:
    """Read-only views of the engine's streams, to know when everything sent has been processed."""

    def __init__(self, env: dict[str, str]) -> None:
        self.settings = Settings(_env_file=None, **_settings_fields(env))
        self.client = redis.Redis.from_url(env["TRIPWIRE_REDIS_URL"])

    def drained(self, stream: str, group: str) -> bool:
        try:
            groups = self.client.xinfo_groups(stream)
        except redis.ResponseError:
            return False
        info = next((g for g in groups if g["name"].decode() == group), None)
        return info is not None and info["pending"] == 0 and info.get("lag") == 0

    def all_drained(self) -> bool:
        s = self.settings.streams
        return self.drained(s.events, "evaluator") and self.drained(s.key("firings"), "firings")

    def outbox(self) -> list[dict[str, Any]]:
        return [json.loads(f[b"data"]) for _, f in self.client.xrange(self.settings.streams.key("firings"))]

    def pending_of(self, stream: str, group: str) -> dict[str, int]:
        return {
            c["name"].decode(): c["pending"]
            for c in self.client.xinfo_consumers(stream, group)
            if c["pending"]
        }


def _settings_fields(env: dict[str, str]) -> dict[str, Any]:
    return {
        "redis_url": env["TRIPWIRE_REDIS_URL"],
        "streams": {"prefix": env["TRIPWIRE_STREAMS__PREFIX"]},
    }


@pytest.fixture
def env(tmp_path: Path, redis_server: RedisServer) -> dict[str, str]:
    return tripwire_env(tmp_path, redis_server, **FAST_RECLAIM)


@pytest.fixture
def engine(tmp_path: Path, redis_server: RedisServer, env: dict[str, str]) -> Iterator[EngineProcess]:
    process = EngineProcess(tmp_path, redis_server, env=env)
    yield process
    assert process.stop() == 0, process.log.read_text()


def firings_of(engine: EngineProcess, name: str) -> list[dict[str, Any]]:
    page = httpx.get(f"{engine.url}/api/automations/{name}/firings", params={"limit": 1000}, timeout=10)
    page.raise_for_status()
    return page.json()["firings"]


def await_live(env: dict[str, str], evaluators: int) -> None:
    """Wait until ``evaluators`` running evaluators use the latest automations (what ``apply`` waits for)."""
    streams = Streams(env)

    def live() -> bool:
        version = int(streams.client.get(streams.settings.streams.key("automations", "version")) or 0)
        reported = streams.client.hgetall(streams.settings.streams.key("evaluators"))
        now_ms = time.time() * 1000
        current = [
            v for v in reported.values()
            if int(v.split(b"|")[0]) >= version and now_ms - int(v.split(b"|")[1]) < 5000
        ]  # fmt: skip
        return len(current) >= evaluators

    await_condition(live, f"{evaluators} evaluator(s) to use the automations")


def post_events(engine: EngineProcess, events: list[dict[str, Any]]) -> None:
    response = httpx.post(f"{engine.url}/api/events", json=events, timeout=30)
    assert response.status_code == 202, response.text


def test_three_failures_from_a_json_file_fire_once_per_deployment(engine: EngineProcess) -> None:
    applied = cli(engine.env, "automation", "apply", "-f", str(THREE_FAILURES))
    assert "created" in applied and "live on 1 evaluator(s)" in applied  # apply waits until it is live
    streams = Streams(engine.env)
    # etl fails 3 times, ml twice, batch 4 times: one firing for etl and one for batch.
    etl = [failure("etl", n) for n in range(3)]
    ml = [failure("ml", n) for n in range(2)]
    batch = [failure("batch", n) for n in range(4)]
    post_events(engine, etl[:2] + ml + batch[:2])
    post_events(engine, etl[2:] + batch[2:])
    await_condition(lambda: len(firings_of(engine, "etl keeps failing")) >= 2, "two firings", log=engine.log)
    await_condition(streams.all_drained, "the evaluator and the relay to drain", log=engine.log)

    fired = firings_of(engine, "etl keeps failing")
    keys = sorted(f["labels"]["related:deployment:tripwire.resource.id"] for f in fired)
    assert keys == ["batch", "etl"]
    await_condition(
        lambda: len(engine.events_named("tripwire.automation.triggered")) == 2, "triggered events"
    )
    triggered = engine.events_named("tripwire.automation.triggered")
    assert sorted(e["payload"]["firing_id"] for e in triggered) == sorted(f["id"] for f in fired)
    table = cli(engine.env, "automation", "firings", "etl keeps failing")
    assert "triggered" in table and "batch" in table


def test_two_evaluator_processes_share_the_stream(engine: EngineProcess, tmp_path: Path) -> None:
    cli(engine.env, "automation", "apply", "-f", str(THREE_FAILURES))
    second = ServiceProcess(engine.env, tmp_path / "evaluator-2.log", "evaluator")
    await_live(engine.env, 2)
    streams = Streams(engine.env)
    deployments = [f"d{i}" for i in range(150)]
    try:
        for n in range(3):
            for i in range(0, len(deployments), 10):  # many small batches so both evaluators take part
                post_events(engine, [failure(d, n) for d in deployments[i : i + 10]])
        await_condition(
            lambda: len(firings_of(engine, "etl keeps failing")) >= 150, "150 firings", log=engine.log
        )
        await_condition(streams.all_drained, "the evaluators and the relay to drain", log=engine.log)
    finally:
        assert second.stop() == 0, second.log.read_text()
    keys = [
        f["labels"]["related:deployment:tripwire.resource.id"]
        for f in firings_of(engine, "etl keeps failing")
    ]
    assert sorted(keys) == sorted(deployments)  # none lost, none doubled
    consumers = streams.client.xinfo_consumers(streams.settings.streams.events, "evaluator")
    assert len(consumers) >= 2


def test_an_evaluator_killed_mid_stream_loses_and_doubles_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Recorder and relay in one process, the only evaluator in another: SIGKILL it with entries pending."""
    rest = ServiceProcess(env, tmp_path / "rest.log", "recorder", "firings")
    streams = Streams(env)
    asyncio.run(_apply(env))
    evaluator = ServiceProcess(env, tmp_path / "evaluator-1.log", "evaluator")
    await_live(env, 1)
    resources = 3000
    try:
        events = [failure(f"d{i}", n) for n in range(3) for i in range(resources)]
        asyncio.run(_emit(env, events))
        stream = streams.settings.streams.events
        await_condition(
            lambda: bool(streams.pending_of(stream, "evaluator")), "the evaluator to hold entries"
        )
        evaluator.kill()
        held = streams.pending_of(stream, "evaluator")
        assert held, "the killed evaluator held no pending entries"
        restarted = ServiceProcess(env, tmp_path / "evaluator-2.log", "evaluator")
        try:
            await_condition(lambda: len(streams.outbox()) >= resources, "all firings", timeout_s=120)
            await_condition(streams.all_drained, "everything to drain", timeout_s=60)
        finally:
            assert restarted.stop() == 0, restarted.log.read_text()
    finally:
        rest.stop()
    docs = [d for d in streams.outbox() if d["kind"] == "triggered"]
    keys = [d["labels"]["related:deployment:tripwire.resource.id"] for d in docs]
    assert len(keys) == resources and len(set(keys)) == resources


async def _apply(env: dict[str, str]) -> None:
    settings = Settings(_env_file=None, database_url=env["TRIPWIRE_DATABASE_URL"], **_settings_fields(env))
    db = Database(settings.effective_database_url)
    await db.start()
    client = aioredis.Redis.from_url(settings.effective_redis_url)
    try:
        store = AutomationStore(db, client, settings.streams)
        for automation in load_automations(THREE_FAILURES):
            await store.apply(automation)
    finally:
        await client.aclose()
        await db.stop()


async def _emit(env: dict[str, str], events: list[dict[str, Any]]) -> None:
    settings = Settings(_env_file=None, **_settings_fields(env))
    async with tripwire.connect(settings) as tw:
        for i in range(0, len(events), 1000):
            await tw.emit_events(events[i : i + 1000])


def test_a_silent_worker_fires_within_a_second_of_its_deadline_and_resolves(engine: EngineProcess) -> None:
    rule = {
        "name": "worker went quiet",
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "expect": ["tripwire.worker.heartbeat"],
            "for_each": ["tripwire.resource.id"],
            "within": 10,
        },
        "actions": [{"type": "do-nothing"}],
        "actions_on_resolve": [{"type": "do-nothing"}],
    }
    created = httpx.post(f"{engine.url}/api/automations", json=rule, timeout=10)
    assert created.status_code == 201, created.text
    await_live(engine.env, 1)

    def beat(*workers: str) -> None:
        post_events(
            engine,
            [
                {"event": "tripwire.worker.heartbeat", "resource": {"tripwire.resource.id": w}}
                for w in workers
            ],
        )

    beat("w1", "w2")
    last_w2 = time.time()
    started = time.monotonic()
    while time.monotonic() - started < 12:  # w1 keeps beating every second, w2 is silent
        time.sleep(1)  # pacing the producer (not synchronisation)
        beat("w1")
    await_condition(
        lambda: len(firings_of(engine, "worker went quiet")) >= 1, "the w2 firing", log=engine.log
    )
    (fired,) = firings_of(engine, "worker went quiet")
    assert fired["labels"] == {"tripwire.resource.id": "w2"}
    deadline = datetime.fromisoformat(fired["occurred"]).timestamp()
    assert abs(deadline - (last_w2 + 10)) < 1.0
    lateness = datetime.fromisoformat(fired["recorded_at"]).timestamp() - deadline
    assert 0 <= lateness < 1.5, f"fired {lateness:.2f}s after its deadline"

    beat("w2")
    await_condition(
        lambda: len(firings_of(engine, "worker went quiet")) == 2, "the resolution", log=engine.log
    )
    kinds = [f["kind"] for f in firings_of(engine, "worker went quiet")]
    assert kinds == ["resolved", "triggered"]
