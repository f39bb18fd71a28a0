"""The evaluator service against a real Redis: batches, shared state, timers, backlog, outbox."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from events.bus import RedisBus, RedisConsumer
from events.codec import decode_event, encode_event
from events.emit import EventEmitter
from events.model import Event
from triggers.models import Automation
from triggers.outbox import OutboxService
from triggers.progress import evaluators_status
from triggers.service import EvaluatorService
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, seconds: float) -> None:
        self.now = T0 + timedelta(seconds=seconds)


class Automations:
    """An in-memory AutomationSource."""

    def __init__(self, *automations: Automation, enabled_at: datetime = T0) -> None:
        self.items = {a.id: (a, enabled_at) for a in automations}
        self.version = 1

    async def changes_version(self) -> int:
        return self.version

    async def enabled_automations(self) -> list[tuple[Automation, datetime]]:
        return [(a, at) for a, at in self.items.values() if a.enabled]


class Sink:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    async def record_outbox(self, docs: list[dict[str, Any]]) -> int:
        new = [d for d in docs if d["id"] not in self.docs]
        self.docs.update((d["id"], d) for d in docs)
        return len(new)


async def until(predicate: Callable[[], Any], timeout_s: float = 10.0) -> None:
    """Await a condition (bounded poll), failing with a clear message."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await _value(predicate()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def _value(v: Any) -> Any:
    return await v if asyncio.iscoroutine(v) else v


def three_failures() -> Automation:
    return Automation.model_validate(
        {
            "name": "etl keeps failing",
            "trigger": {
                "type": "event",
                "expect": ["tripwire.flow-run.Failed"],
                "match_related": {"tripwire.resource.role": "deployment"},
                "for_each": ["related:deployment:tripwire.resource.id"],
                "threshold": 3,
                "within": 600,
            },
            "actions": [{"type": "do-nothing"}],
        }
    )


def heartbeat_rule() -> Automation:
    return Automation.model_validate(
        {
            "name": "worker went quiet",
            "trigger": {
                "type": "event",
                "posture": "Proactive",
                "expect": ["tripwire.worker.heartbeat"],
                "for_each": ["tripwire.resource.id"],
                "within": 10,
            },
            "actions": [{"type": "do-nothing"}],
        }
    )


def failed_run(deployment: str, at: float) -> Event:
    return Event(
        occurred=T0 + timedelta(seconds=at),
        event="tripwire.flow-run.Failed",
        resource={"tripwire.resource.id": f"tripwire.flow-run.{deployment}-{at}"},
        related=[{"tripwire.resource.id": deployment, "tripwire.resource.role": "deployment"}],
    )


def heartbeat(worker: str, at: float) -> Event:
    return Event(
        occurred=T0 + timedelta(seconds=at),
        event="tripwire.worker.heartbeat",
        resource={"tripwire.resource.id": worker},
    )


@pytest.fixture
async def bus(redis_client: aioredis.Redis, settings: Settings) -> AsyncIterator[RedisBus]:
    bus = RedisBus(redis_client, settings.streams)
    yield bus
    await bus.close()


def make_service(
    bus: RedisBus,
    redis_client: aioredis.Redis,
    settings: Settings,
    source: Automations,
    clock: FakeClock,
    name: str,
) -> EvaluatorService:
    # Ticks are driven by the tests (tick()); the background tick only repeats them, hourly.
    return EvaluatorService(
        bus=bus,
        redis=redis_client,
        settings=settings,
        automations=source,
        consumer=name,
        clock=clock,
        tick_interval_s=3600,
    )


async def outbox(redis_client: aioredis.Redis, settings: Settings) -> list[dict[str, Any]]:
    rows = await redis_client.xrange(settings.streams.key("firings"))
    return [json.loads(fields[b"data"]) for _, fields in rows]


async def test_three_failures_fire_once_per_deployment(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0)
    emitter = EventEmitter(bus, settings, clock=clock)
    service = make_service(bus, redis_client, settings, Automations(three_failures()), clock, "e1")
    async with service:
        events = [failed_run(d, at) for at in (1, 2, 3) for d in ("etl", "ml")] + [failed_run("etl", 700)]
        clock.set(700)
        await emitter.emit_events(events)
        await until(lambda: _fired(redis_client, settings, 2))
    # At 700 s both keys are also past their resolution time (fired at 3 s + 600 s): a tick that runs
    # meanwhile resolves them, so only the firings are counted here.
    docs = [d for d in await outbox(redis_client, settings) if d["kind"] == "triggered"]
    assert sorted(d["labels"]["related:deployment:tripwire.resource.id"] for d in docs) == ["etl", "ml"]
    by_key = {d["labels"]["related:deployment:tripwire.resource.id"]: d for d in docs}
    assert by_key["etl"]["event_id"] == str(events[4].id)  # the third etl failure
    assert len(by_key["etl"]["event_ids"]) == 3


async def _fired(redis_client: aioredis.Redis, settings: Settings, n: int) -> bool:
    return int(await redis_client.xlen(settings.streams.key("firings"))) >= n and await _drained(
        redis_client, settings
    )


async def _drained(redis_client: aioredis.Redis, settings: Settings) -> bool:
    groups = await redis_client.xinfo_groups(settings.streams.events)
    group = next(g for g in groups if g["name"] == b"evaluator")
    return group["pending"] == 0 and group.get("lag", 0) == 0


async def test_two_evaluators_share_state_without_losing_or_doubling(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0)
    source = Automations(three_failures())
    emitter = EventEmitter(bus, settings, clock=clock)
    one = make_service(bus, redis_client, settings, source, clock, "e1")
    two = make_service(bus, redis_client, settings, source, clock, "e2")
    deployments = [f"d{i}" for i in range(40)]
    async with one, two:
        for at in (1, 2, 3):  # round robin, small batches so both evaluators take part
            for d in deployments:
                await emitter.emit_events([failed_run(d, at)])
        clock.set(10)
        await until(lambda: _fired(redis_client, settings, 40))
    docs = await outbox(redis_client, settings)
    keys = [d["labels"]["related:deployment:tripwire.resource.id"] for d in docs]
    assert sorted(keys) == sorted(deployments)


async def test_duplicate_event_ids_count_once(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0)
    emitter = EventEmitter(bus, settings, clock=clock)
    service = make_service(bus, redis_client, settings, Automations(three_failures()), clock, "e1")
    async with service:
        first, second = failed_run("etl", 1), failed_run("etl", 2)
        await emitter.emit_events([first, second, first, second, first])
        await until(lambda: _drained(redis_client, settings))
        assert await outbox(redis_client, settings) == []
        await emitter.emit_events([failed_run("etl", 3)])
        await until(lambda: _fired(redis_client, settings, 1))
    assert len(await outbox(redis_client, settings)) == 1


async def test_silent_worker_fires_at_its_deadline_and_resolves(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0)
    emitter = EventEmitter(bus, settings, clock=clock)
    service = make_service(bus, redis_client, settings, Automations(heartbeat_rule()), clock, "e1")
    async with service:
        await emitter.emit_events([heartbeat("w1", 0), heartbeat("w2", 0)])
        await until(lambda: _drained(redis_client, settings))
        clock.set(6)
        await emitter.emit_events([heartbeat("w1", 6)])
        await until(lambda: _drained(redis_client, settings))
        clock.set(9.9)
        assert not (await service.tick()).firings
        clock.set(10.2)
        out = await service.tick()
        assert [(f.labels, f.fire_time) for f in out.firings] == [
            ({"tripwire.resource.id": "w2"}, T0 + timedelta(seconds=10))
        ]
        clock.set(11)
        await emitter.emit_events([heartbeat("w2", 11)])
        await until(lambda: _fired(redis_client, settings, 2))
    docs = await outbox(redis_client, settings)
    assert [(d["kind"], d["labels"]["tripwire.resource.id"]) for d in docs] == [
        ("triggered", "w2"),
        ("resolved", "w2"),
    ]


async def test_backlogged_heartbeats_never_fake_a_silence(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0)
    emitter = EventEmitter(bus, settings, clock=clock)
    service = make_service(bus, redis_client, settings, Automations(heartbeat_rule()), clock, "e1")
    async with service:
        await emitter.emit_events([heartbeat("w1", 0)])
        await until(lambda: _drained(redis_client, settings))
    # The evaluator is stopped: heartbeats queue on the stream while time passes the deadline.
    clock.set(8)
    await emitter.emit_events([heartbeat("w1", 8)])
    clock.set(12)
    assert (await service.tick()).firings == []  # the queued heartbeat at 8 s holds the deadline back
    async with service:
        await until(lambda: _drained(redis_client, settings))
        assert (await service.tick()).firings == []  # deadline is now 18 s
        clock.set(18.5)
        assert len((await service.tick()).firings) == 1


async def test_outbox_records_announces_and_queues_actions(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0)
    emitter = EventEmitter(bus, settings, clock=clock)
    sink = Sink()
    service = make_service(bus, redis_client, settings, Automations(three_failures()), clock, "e1")
    relay = OutboxService(bus=bus, settings=settings, sink=sink, consumer="o1", clock=clock)
    async with service:
        await relay.start()
        try:
            await emitter.emit_events([failed_run("etl", at) for at in (1, 2, 3)])
            await until(lambda: len(sink.docs) == 1)
            await until(lambda: _xlen(redis_client, settings.streams.actions, 1))
        finally:
            await relay.stop()
    (doc,) = sink.docs.values()
    (_, fields), *_ = await redis_client.xrange(settings.streams.actions)
    action = json.loads(fields[b"data"])
    assert action["idempotency_key"] == f"{doc['id']}:triggered:0"
    rows = await redis_client.xrange(settings.streams.events)
    names = [json.loads(f[b"data"])["event"] for _, f in rows]
    assert names.count("tripwire.automation.triggered") == 1
    announced = decode_event(rows[names.index("tripwire.automation.triggered")][1][b"data"])
    assert announced.id == uuid.uuid5(uuid.NAMESPACE_URL, f"tripwire:triggered:{doc['id']}")
    assert announced.occurred == T0 + timedelta(seconds=3)
    assert announced.received == T0
    assert announced.resource == {
        "tripwire.resource.id": f"tripwire.automation.{doc['automation_id']}",
        "tripwire.resource.name": "etl keeps failing",
    }
    assert announced.related == [
        {
            "tripwire.resource.id": f"tripwire.event.{doc['event_id']}",
            "tripwire.resource.role": "triggering-event",
        }
    ]
    assert announced.payload == {
        "firing_id": doc["id"],
        "trigger_path": "t",
        "labels": {"related:deployment:tripwire.resource.id": "etl"},
        "event_ids": doc["event_ids"],
        "mode": "live",
        "actions": [{"index": 0, "type": "do-nothing", "status": "queued"}],
    }
    assert len(doc["event_ids"]) == 3


async def _xlen(client: aioredis.Redis, stream: str, n: int) -> bool:
    return int(await client.xlen(stream)) >= n


async def test_dry_run_records_would_have_run_and_queues_no_action(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0)
    emitter = EventEmitter(bus, settings, clock=clock)
    sink = Sink()
    rule = three_failures().model_copy(update={"mode": "dry-run"})
    service = make_service(bus, redis_client, settings, Automations(rule), clock, "e1")
    relay = OutboxService(bus=bus, settings=settings, sink=sink, consumer="o1", clock=clock)
    async with service:
        await relay.start()
        try:
            await emitter.emit_events([failed_run("etl", at) for at in (1, 2, 3)])
            await until(lambda: len(sink.docs) == 1)
            await until(lambda: _xlen(redis_client, settings.streams.events, 4))  # + the triggered event
        finally:
            await relay.stop()
    (doc,) = sink.docs.values()
    assert doc["mode"] == "dry-run"
    assert [a["status"] for a in doc["actions"]] == ["would have run"]
    assert int(await redis_client.xlen(settings.streams.actions)) == 0


async def test_evaluators_report_the_automations_version_they_use(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    source = Automations(three_failures())
    service = make_service(bus, redis_client, settings, source, FakeClock(T0), "e1")
    assert not (await evaluators_status(redis_client, settings.streams, 1)).current  # none running
    async with service:
        assert (await evaluators_status(redis_client, settings.streams, 1)).evaluators == {"e1": 1}
        source.version = 2
        assert not (await evaluators_status(redis_client, settings.streams, 2)).current
        await service.reload()
        assert (await evaluators_status(redis_client, settings.streams, 2)).current
    assert (await evaluators_status(redis_client, settings.streams, 2)).evaluators == {}  # stopped: gone


def every_event_rule() -> Automation:
    """Fires once per processed ``x.*`` event: firings count how often events were evaluated."""
    return Automation.model_validate(
        {
            "name": "every x",
            "trigger": {"type": "event", "expect": ["x.*"], "for_each": ["tripwire.resource.id"]},
        }
    )


def x_event(name: str, at: float, follows: Event | None = None) -> Event:
    return Event(
        occurred=T0 + timedelta(seconds=at),
        event=f"x.{name}",
        resource={"tripwire.resource.id": name},
        follows=None if follows is None else follows.id,
    )


async def _fired_names(service: EvaluatorService, *batches: list[Event]) -> list[str]:
    names = []
    for batch in batches:
        out = await service.evaluate(batch)
        names += [f.labels["tripwire.resource.id"] for f in out.firings]
    return names


async def test_a_follower_waits_for_its_predecessor_across_batches(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0 + timedelta(seconds=5))
    service = make_service(bus, redis_client, settings, Automations(every_event_rule()), clock, "e1")
    await service.reload(force=True)
    p = x_event("p", 1)
    f = x_event("f", 2, follows=p)
    assert await _fired_names(service, [f], [f]) == []  # held; its redelivery is a duplicate
    assert await _fired_names(service, [p]) == ["p", "f"]  # released right after its predecessor
    assert await _fired_names(service, [p, f]) == []  # both processed: duplicates now
    assert not await redis_client.exists(settings.streams.key("held", str(p.id)))


async def test_a_held_chain_released_by_a_tick_is_processed_once(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0 + timedelta(seconds=5))
    service = make_service(bus, redis_client, settings, Automations(every_event_rule()), clock, "e1")
    await service.reload(force=True)
    never = x_event("never", 0)  # the predecessor that never arrives
    f1 = x_event("f1", 1, follows=never)
    f2 = x_event("f2", 2, follows=f1)
    assert await _fired_names(service, [f1, f2]) == []
    clock.now = T0 + timedelta(seconds=2 + 900)  # both waits are over: f2 is due itself and as f1's follower
    out = await service.tick()
    assert [f.labels["tripwire.resource.id"] for f in out.firings] == ["f1", "f2"]
    assert (await service.tick()).firings == []
    assert await redis_client.scard(settings.streams.key("awaited")) == 0


async def test_a_follows_cycle_is_released_once_and_does_not_hang(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0 + timedelta(seconds=5))
    service = make_service(bus, redis_client, settings, Automations(every_event_rule()), clock, "e1")
    await service.reload(force=True)
    a_id, b_id = uuid.uuid4(), uuid.uuid4()
    a = x_event("a", 1).model_copy(update={"id": a_id, "follows": b_id})
    b = x_event("b", 2).model_copy(update={"id": b_id, "follows": a_id})
    assert await _fired_names(service, [a], [b], [a]) == []
    clock.now = T0 + timedelta(seconds=2 + 900)
    out = await asyncio.wait_for(service.tick(), 10)
    assert sorted(f.labels["tripwire.resource.id"] for f in out.firings) == ["a", "b"]


async def test_concurrent_ticks_release_a_held_event_once(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0 + timedelta(seconds=5))
    source = Automations(every_event_rule())
    one = make_service(bus, redis_client, settings, source, clock, "e1")
    two = make_service(bus, redis_client, settings, source, clock, "e2")
    await one.reload(force=True)
    await two.reload(force=True)
    held = [x_event(f"h{i}", 1, follows=x_event("never", 0)) for i in range(20)]
    assert await _fired_names(one, held) == []
    clock.now = T0 + timedelta(seconds=1 + 900)
    first, second = await asyncio.gather(one.tick(), two.tick())
    names = [f.labels["tripwire.resource.id"] for f in (*first.firings, *second.firings)]
    assert sorted(names) == sorted(f"h{i}" for i in range(20))


async def test_state_expires_with_its_windows_but_not_before_its_all_clear(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0 + timedelta(seconds=10))
    service = make_service(bus, redis_client, settings, Automations(three_failures()), clock, "e1")
    await service.reload(force=True)
    await service.evaluate(
        [failed_run("etl", 1), failed_run("ml", 1), failed_run("ml", 2), failed_run("ml", 3)]
    )
    ttls = {}
    for key in await redis_client.keys(settings.streams.key("state", "*")):
        ttls["etl" if b"etl" in key else "ml"] = await redis_client.pttl(key)
    assert 0 < ttls["etl"] <= 8 * 86_400_000  # counting: expires with its window
    assert ttls["ml"] == -1  # fired and not yet resolved: kept until its all-clear


# --- pass-through (service note 5): entries no trigger can consider ------------------------------------


def y_event(name: str, at: float) -> Event:
    """An event the ``x.*`` rule cannot consider."""
    return Event(
        occurred=T0 + timedelta(seconds=at), event=f"y.{name}", resource={"tripwire.resource.id": name}
    )


async def _mark(redis_client: aioredis.Redis, settings: Settings, event: Event) -> bytes | None:
    return await redis_client.get(settings.streams.key("seen", str(event.id)))


async def _fired_labels(redis_client: aioredis.Redis, settings: Settings) -> list[str]:
    return [d["labels"]["tripwire.resource.id"] for d in await outbox(redis_client, settings)]


async def test_an_event_no_trigger_can_consider_is_marked_processed_and_nothing_else(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0 + timedelta(seconds=5))
    service = make_service(bus, redis_client, settings, Automations(every_event_rule()), clock, "e1")
    other, x = y_event("other", 1), x_event("x", 2)
    async with service:
        await bus.publish(settings.streams.events, [encode_event(other), encode_event(x)])
        await until(lambda: _mark(redis_client, settings, x))
        assert await _mark(redis_client, settings, other) == b"p"
        assert await _fired_labels(redis_client, settings) == ["x"]
        assert not await redis_client.keys(settings.streams.key("state", "*other*"))


@pytest.mark.parametrize("together", [True, False], ids=["same-batch", "later-batch"])
async def test_a_predecessor_no_trigger_considers_still_releases_its_follower(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings, together: bool
) -> None:
    clock = FakeClock(T0 + timedelta(seconds=5))
    service = make_service(bus, redis_client, settings, Automations(every_event_rule()), clock, "e1")
    p = y_event("p", 1)
    f = x_event("f", 2, follows=p)
    async with service:
        if together:  # the follower first: held, then released by its predecessor in the same batch
            await bus.publish(settings.streams.events, [encode_event(f), encode_event(p)])
        else:
            await bus.publish(settings.streams.events, [encode_event(f)])
            await until(lambda: _mark(redis_client, settings, f))
            assert await _mark(redis_client, settings, f) == b"h"
            await bus.publish(settings.streams.events, [encode_event(p)])
        await until(lambda: _fired_labels(redis_client, settings))
        assert await _fired_labels(redis_client, settings) == ["f"]
        assert await _mark(redis_client, settings, p) == b"p"
        assert await _mark(redis_client, settings, f) == b"p"
        assert not await redis_client.exists(settings.streams.key("held", str(p.id)))


async def test_an_entry_with_a_bad_id_is_counted_undecodable_not_marked(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    clock = FakeClock(T0 + timedelta(seconds=5))
    service = make_service(bus, redis_client, settings, Automations(every_event_rule()), clock, "e1")
    bad = json.dumps({"id": "not-a-uuid", "event": "y.bad", "resource": {"tripwire.resource.id": "b"}})
    x = x_event("x", 2)
    async with service:
        await bus.publish(settings.streams.events, [bad.encode(), encode_event(x)])
        await until(lambda: _mark(redis_client, settings, x))
        assert service.undecodable == 1
        assert not await redis_client.exists(settings.streams.key("seen", "not-a-uuid"))


async def test_the_commit_acknowledges_the_batch_without_a_separate_xack(
    bus: RedisBus, redis_client: aioredis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    separate: list[list[str]] = []
    original = RedisConsumer._ack

    async def counting_ack(self: RedisConsumer, ids: list[str], *, forget_failures: bool) -> None:
        separate.append(ids)
        await original(self, ids, forget_failures=forget_failures)

    monkeypatch.setattr(RedisConsumer, "_ack", counting_ack)
    clock = FakeClock(T0 + timedelta(seconds=5))
    service = make_service(bus, redis_client, settings, Automations(every_event_rule()), clock, "e1")
    events = [x_event(f"x{i}", i) for i in range(5)] + [y_event("other", 6)]
    async with service:
        await bus.publish(settings.streams.events, [encode_event(e) for e in events])
        await until(lambda: _mark(redis_client, settings, events[-1]))
        pending = await redis_client.xpending(settings.streams.events, "evaluator")
        assert pending["pending"] == 0
    assert separate == []
    assert sorted(await _fired_labels(redis_client, settings)) == [f"x{i}" for i in range(5)]
