"""The bus contract against RedisBus (private redis-server) and MemoryBus; then Redis-only failure cases."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from events.bus import PackingConnection, RedisBus, connect_redis, failures_key, redact_url
from events.codec import decode_event, encode_event
from events.memory import MemoryBus
from events.model import RESOURCE_ID, Event
from events.ports import StreamEntry
from tests.conftest import REPO, RedisServer, free_port
from tripwire.errors import ServiceUnavailable
from tripwire.services import ServiceState
from tripwire.settings import StreamSettings

AnyBus = RedisBus | MemoryBus
MakeBus = Callable[..., AnyBus]


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


async def pending_count(bus: AnyBus, stream: str, group: str) -> int:
    if isinstance(bus, MemoryBus):
        return len(bus.pending(stream, group))
    return int((await bus.client.xpending(stream, group))["pending"])


async def stream_length(bus: AnyBus, stream: str) -> int:
    return bus.length(stream) if isinstance(bus, MemoryBus) else int(await bus.client.xlen(stream))


async def trim_all(bus: AnyBus, stream: str) -> None:
    if isinstance(bus, MemoryBus):
        bus.trim(stream, 0)
    else:
        await bus.client.xtrim(stream, maxlen=0, approximate=False)


async def delete_stream(bus: AnyBus, stream: str) -> None:
    if isinstance(bus, MemoryBus):
        bus.delete(stream)
    else:
        await bus.client.delete(stream)


class Recorder:
    """A handler that records every call and raises when ``fail(entry)`` holds for an entry of the batch."""

    def __init__(self, fail: Callable[[StreamEntry], bool] = lambda e: False) -> None:
        self.fail = fail
        self.calls: list[list[StreamEntry]] = []
        self.done: list[StreamEntry] = []

    async def __call__(self, entries: list[StreamEntry]) -> None:
        self.calls.append(entries)
        for e in entries:
            if self.fail(e):
                raise ValueError(f"cannot process {e.data.decode()}")
        self.done.extend(entries)

    @property
    def done_ids(self) -> list[str]:
        return [e.id for e in self.done]


def payloads(n: int, tag: str = "n") -> list[bytes]:
    return [f'{{"{tag}": {i}}}'.encode() for i in range(n)]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_bus(request: pytest.FixtureRequest, stream_settings: StreamSettings) -> AsyncIterator[MakeBus]:
    """Builds a bus of the parametrized kind with ``stream_settings`` changed by keyword; closes it after."""
    client = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        client = await connect_redis(server.url)
    made: list[AnyBus] = []

    def make(**changes: object) -> AnyBus:
        streams = stream_settings.model_copy(update=changes)
        bus: AnyBus = RedisBus(client, streams) if client is not None else MemoryBus(streams)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.close()
    if client is not None:
        keys = [k async for k in client.scan_iter(match=f"{stream_settings.prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


# -- the contract ----------------------------------------------------------------------------------------
async def test_publish_then_consume_acks_the_batch_at_once(make_bus: MakeBus) -> None:
    bus = make_bus()
    stream = bus.streams.events
    sent = payloads(10)
    ids = await bus.publish(stream, sent)
    assert len(ids) == 10 and len(set(ids)) == 10
    handler = Recorder()
    consumer = bus.consumer(stream, "g", "c1", handler)
    assert consumer.state is ServiceState.CREATED
    async with consumer:
        assert consumer.state is ServiceState.RUNNING and consumer.name == "c1"
        await until(lambda: len(handler.done) == 10, "10 entries handled")
        await until(lambda: _is_zero(pending_count(bus, stream, "g")), "the batch acked")
    assert consumer.state is ServiceState.STOPPED
    assert len(handler.calls) == 1  # one batch: publish is atomic, so the consumer saw all 10 at once
    assert [e.id for e in handler.calls[0]] == ids
    assert [e.data for e in handler.calls[0]] == sent
    assert {e.deliveries for e in handler.calls[0]} == {1}


async def _is_zero(value: Awaitable[int]) -> bool:
    return await value == 0


async def test_a_handler_that_acknowledged_its_batch_itself_gets_no_second_ack(make_bus: MakeBus) -> None:
    bus = make_bus()
    stream = bus.streams.events
    await bus.publish(stream, payloads(3))
    handled: list[StreamEntry] = []

    async def acks_itself(entries: list[StreamEntry]) -> bool:
        handled.extend(entries)
        return True  # says so, but (here) did not: the entries must stay pending

    async with bus.consumer(stream, "g", "c1", acks_itself):
        await until(lambda: len(handled) == 3, "3 entries handled")
    assert await pending_count(bus, stream, "g") == 3


async def test_publish_nothing_returns_no_ids(make_bus: MakeBus) -> None:
    bus = make_bus()
    assert await bus.publish(bus.streams.events, []) == []
    assert await stream_length(bus, bus.streams.events) == 0


async def test_publish_is_all_or_nothing(make_bus: MakeBus) -> None:
    bus = make_bus()
    with pytest.raises(TypeError, match=r"payloads\[1\] is str, expected bytes; nothing was published"):
        await bus.publish(bus.streams.events, [b"a", "b", b"c"])  # type: ignore[list-item]
    assert await stream_length(bus, bus.streams.events) == 0


async def test_publish_many_chunks_keeps_order(make_bus: MakeBus) -> None:
    bus = make_bus()
    sent = payloads(2500)
    ids = await bus.publish(bus.streams.events, sent)
    assert len(ids) == 2500
    handler = Recorder()
    async with bus.consumer(bus.streams.events, "g", "c1", handler):
        await until(lambda: len(handler.done) == 2500, "2500 entries handled")
    assert handler.done_ids == ids
    assert [e.data for e in handler.done] == sent


async def test_ensure_group_is_idempotent_and_reads_the_backlog(make_bus: MakeBus) -> None:
    bus = make_bus()
    stream = bus.streams.events
    ids = await bus.publish(stream, payloads(3))
    await bus.ensure_group(stream, "g")
    await bus.ensure_group(stream, "g")
    await bus.ensure_group(stream, "late", start_id="$")
    early, late = Recorder(), Recorder()
    async with bus.consumer(stream, "g", "c1", early), bus.consumer(stream, "late", "c1", late):
        new = await bus.publish(stream, payloads(1, "new"))
        await until(lambda: len(early.done) == 4 and len(late.done) == 1, "both groups caught up")
    assert early.done_ids == ids + new
    assert late.done_ids == new


async def test_two_consumers_in_a_group_share_entries_without_duplicates(make_bus: MakeBus) -> None:
    bus = make_bus(batch_size=5, reclaim_idle_ms=60_000)
    stream = bus.streams.events
    ids = await bus.publish(stream, payloads(100))
    seen: dict[str, list[str]] = {"a": [], "b": []}
    both_busy = asyncio.Event()

    def handler_for(name: str) -> Callable[[list[StreamEntry]], Awaitable[None]]:
        async def handle(entries: list[StreamEntry]) -> None:
            seen[name].extend(e.id for e in entries)
            if seen["a"] and seen["b"]:
                both_busy.set()
            await asyncio.wait_for(both_busy.wait(), 10)  # hold the first batch until the other has one

        return handle

    a, b = bus.consumer(stream, "g", "a", handler_for("a")), bus.consumer(stream, "g", "b", handler_for("b"))
    async with a, b:
        await until(lambda: len(seen["a"]) + len(seen["b"]) >= 100, "100 entries handled")
        await until(lambda: _is_zero(pending_count(bus, stream, "g")), "everything acked")
    everything = seen["a"] + seen["b"]
    assert sorted(everything) == sorted(ids) and len(everything) == 100
    assert seen["a"] and seen["b"]


async def test_failed_batch_is_redelivered_one_by_one(make_bus: MakeBus) -> None:
    bus = make_bus(reclaim_idle_ms=100)
    stream = bus.streams.events
    ids = await bus.publish(stream, payloads(3))
    handler = Recorder(fail=lambda e: e.deliveries == 1)
    async with bus.consumer(stream, "g", "c1", handler):
        await until(lambda: len(handler.done) == 3, "3 entries handled on redelivery")
        await until(lambda: _is_zero(pending_count(bus, stream, "g")), "everything acked")
    assert [(len(c), c[0].deliveries) for c in handler.calls] == [(3, 1), (1, 2), (1, 2), (1, 2)]
    assert handler.done_ids == ids
    assert await bus.dead_letters(stream) == []


async def test_poison_entry_is_dead_lettered_with_its_reason(make_bus: MakeBus) -> None:
    bus = make_bus(reclaim_idle_ms=100, max_deliveries=3)
    stream = bus.streams.events
    ids = await bus.publish(stream, [b"first", b"poison", b"last"])
    handler = Recorder(fail=lambda e: e.data == b"poison")
    async with bus.consumer(stream, "g", "c1", handler):
        await until(lambda: bus.dead_letters(stream), "a dead letter")
        await until(lambda: _is_zero(pending_count(bus, stream, "g")), "everything acked or dead")
    [(_, dead)] = await bus.dead_letters(stream)
    assert dead == {
        "data": "poison",
        "reason": "ValueError: cannot process poison",
        "group": "g",
        "origin_id": ids[1],
        "deliveries": "3",
    }
    assert sum(e.data == b"poison" for c in handler.calls for e in c) == 3
    assert sorted(handler.done_ids) == sorted([ids[0], ids[2]])
    if isinstance(bus, RedisBus):
        assert await bus.client.exists(failures_key(stream, "g")) == 0


async def test_stop_lets_the_in_flight_handler_finish(make_bus: MakeBus) -> None:
    bus = make_bus()
    stream = bus.streams.events
    await bus.publish(stream, payloads(2))
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(entries: list[StreamEntry]) -> None:
        started.set()
        await release.wait()

    consumer = bus.consumer(stream, "g", "c1", slow)
    await consumer.start()
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(consumer.stop(drain_timeout_s=10))
    await until(lambda: consumer.state is ServiceState.STOPPING, "consumer stopping")
    release.set()
    await stopping
    assert consumer.state is ServiceState.STOPPED
    assert await pending_count(bus, stream, "g") == 0


async def test_stop_cancels_a_stuck_handler_and_keeps_its_entries(make_bus: MakeBus) -> None:
    bus = make_bus()
    stream = bus.streams.events
    await bus.publish(stream, payloads(2))
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck(entries: list[StreamEntry]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    consumer = bus.consumer(stream, "g", "c1", stuck)
    await consumer.start()
    await asyncio.wait_for(started.wait(), 10)
    await consumer.stop(drain_timeout_s=0.05)
    assert cancelled.is_set() and consumer.state is ServiceState.STOPPED
    assert await pending_count(bus, stream, "g") == 2


async def test_entries_trimmed_while_pending_are_acked(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    bus = make_bus(reclaim_idle_ms=100)
    stream = bus.streams.events
    await bus.publish(stream, payloads(5))
    failing = Recorder(fail=lambda e: True)
    async with bus.consumer(stream, "g", "c1", failing):
        await until(lambda: len(failing.calls) == 1, "the batch failed once")
    await trim_all(bus, stream)
    later = Recorder()
    async with bus.consumer(stream, "g", "c2", later):
        await until(lambda: _is_zero(pending_count(bus, stream, "g")), "trimmed entries acked")
    assert later.calls == []
    assert "5 pending entries were trimmed" in caplog.text


async def test_missing_group_is_recreated(make_bus: MakeBus, caplog: pytest.LogCaptureFixture) -> None:
    bus = make_bus()
    stream = bus.streams.events
    handler = Recorder()
    async with bus.consumer(stream, "g", "c1", handler):
        await bus.publish(stream, [b"before"])
        await until(lambda: len(handler.done) == 1, "first entry handled")
        await delete_stream(bus, stream)
        await bus.publish(stream, [b"after"])
        await until(lambda: len(handler.done) == 2, "entry after the deletion handled")
    assert [e.data for e in handler.done] == [b"before", b"after"]
    assert "the consumer group is missing" in caplog.text


async def test_trim_idle_consumers_keeps_those_with_pending_entries(make_bus: MakeBus) -> None:
    bus = make_bus(reclaim_idle_ms=60_000)
    stream = bus.streams.events
    await bus.publish(stream, [b"kept"])
    keeper, idle = Recorder(fail=lambda e: True), Recorder()
    async with bus.consumer(stream, "g", "keeper", keeper):
        await until(lambda: len(keeper.calls) == 1, "keeper holds its entry")
    async with bus.consumer(stream, "g", "idle", idle):
        await bus.publish(stream, [b"handled"])
        await until(lambda: len(idle.done) == 1, "the other consumer handled one")
    removed: list[str] = []

    async def idle_removed() -> bool:
        removed.extend(await bus.trim_idle_consumers(stream, "g", idle_ms=0))
        return "idle" in removed

    await until(idle_removed, "the idle consumer removed")
    assert "keeper" not in removed
    assert await bus.trim_idle_consumers(stream, "nope", idle_ms=0) == []


# -- MemoryBus specifics ---------------------------------------------------------------------------------
async def test_memory_bus_reclaims_by_its_injected_clock(stream_settings: StreamSettings) -> None:
    now = [1000.0]
    bus = MemoryBus(stream_settings.model_copy(update={"reclaim_idle_ms": 60_000}), clock=lambda: now[0])
    handler = Recorder(fail=lambda e: e.deliveries == 1)
    await bus.publish(bus.streams.events, [b"x"])
    async with bus.consumer(bus.streams.events, "g", "c1", handler):
        await until(lambda: len(handler.calls) == 1, "first delivery failed")
        assert bus.pending(bus.streams.events, "g") == {handler.calls[0][0].id: 1}
        now[0] += 61  # a minute later, as far as the bus can tell
        await until(lambda: len(handler.done) == 1, "redelivered after the clock moved")
    assert handler.done[0].deliveries == 2


# -- Redis only ------------------------------------------------------------------------------------------
@pytest.mark.redis
async def test_entries_hold_readable_json_in_one_data_field(
    redis_client: aioredis.Redis, stream_settings: StreamSettings
) -> None:
    bus = RedisBus(redis_client, stream_settings.model_copy(update={"maxlen": 1000}))
    event = Event(event="tripwire.flow-run.Failed", resource={RESOURCE_ID: "flow-run.1"})
    [entry_id] = await bus.publish(bus.streams.events, [encode_event(event)])
    [(raw_id, fields)] = await redis_client.xrange(bus.streams.events)
    assert raw_id.decode() == entry_id and list(fields) == [b"data"]
    assert fields[b"data"].startswith(b'{"id":"') and decode_event(fields[b"data"]) == event
    await bus.publish(bus.streams.events, payloads(3000))
    assert 1000 <= await redis_client.xlen(bus.streams.events) < 3001  # MAXLEN ~ trims, approximately


@pytest.mark.redis
async def test_publish_nothing_makes_no_round_trip(stream_settings: StreamSettings) -> None:
    nowhere = aioredis.Redis(port=free_port())
    assert await RedisBus(nowhere, stream_settings).publish("s", []) == []
    await nowhere.aclose()


@pytest.mark.redis
async def test_connect_redis_packs_commands_with_hiredis_and_they_mean_the_same(
    redis_server: RedisServer,
) -> None:
    client = await connect_redis(redis_server.url)
    try:
        assert client.connection_pool.connection_class is PackingConnection
        key = f"pack-{uuid.uuid4().hex}"
        values = {f"{key}:{i}": f"välue {i}".encode() for i in range(3000)}
        await client.mset(values)
        assert await client.mget(list(values)) == list(values.values())  # one command, 3,001 arguments
        await client.set(key, 41)
        assert await client.incrbyfloat(key, 0.5) == 41.5  # a float: redis-py's own packer
        assert await client.config_get("maxmemory-policy")  # "CONFIG GET": split into two arguments
        async with client.pipeline(transaction=True) as pipe:
            pipe.set(key, "x").append(key, b"y").get(key)
            assert await pipe.execute() == [True, 2, b"xy"]
        with pytest.raises(DataError):  # still refused, as redis-py refuses it
            await client.set(key, None)  # type: ignore[arg-type]
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_connect_redis_names_the_url_without_its_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(ServiceUnavailable) as caught:
        await connect_redis(url)
    message = str(caught.value)
    assert message.startswith(f"cannot reach Redis at redis://:****@127.0.0.1:{url.rsplit(':', 1)[1]}: ")
    assert message.endswith("start redis-server or set TRIPWIRE_REDIS_URL") and "hunter2" not in message


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis://alice:pw@h:6379/1") == "redis://alice:****@h:6379/1"
    assert redact_url("rediss://:pw@h/0") == "rediss://:****@h/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.redis
@pytest.mark.slow
async def test_consumer_killed_before_ack_loses_nothing(
    redis_server: RedisServer, redis_client: aioredis.Redis, stream_settings: StreamSettings
) -> None:
    bus = RedisBus(redis_client, stream_settings.model_copy(update={"reclaim_idle_ms": 100}))
    stream = bus.streams.events
    ids = await bus.publish(stream, payloads(20))
    marker = stream_settings.key("test", "has-batch")
    script = REPO / "tests/events/bus_consumer_proc.py"
    args = [redis_server.url, stream_settings.prefix, "g", "doomed", marker]
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), *args, cwd=REPO)
    try:
        await until(lambda: redis_client.exists(marker), "the doomed consumer holds a batch", timeout_s=30)
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert int(await redis_client.get(marker)) == 20
    [doomed] = (await redis_client.xpending(stream, "g"))["consumers"]
    assert doomed == {"name": b"doomed", "pending": 20}
    ids += await bus.publish(stream, payloads(5, "after"))
    survivor = Recorder()
    async with bus.consumer(stream, "g", "survivor", survivor):
        await until(lambda: len(survivor.done) >= 25, "every entry handled by the survivor")
        await until(lambda: _is_zero(pending_count(bus, stream, "g")), "everything acked")
    assert sorted(survivor.done_ids) == sorted(ids) and len(survivor.done) == 25
    assert sorted(e.deliveries for e in survivor.done) == [1] * 5 + [2] * 20


@pytest.mark.redis
async def test_consumer_keeps_consuming_after_its_connection_is_killed(
    redis_server: RedisServer, stream_settings: StreamSettings
) -> None:
    client = await connect_redis(redis_server.url)
    admin = aioredis.Redis.from_url(redis_server.url)
    bus = RedisBus(client, stream_settings)
    handler = Recorder()
    try:
        async with bus.consumer(bus.streams.events, "g", "c1", handler) as consumer:
            await bus.publish(bus.streams.events, [b"one"])
            await until(lambda: len(handler.done) == 1, "first entry handled")
            killed = await admin.execute_command("CLIENT", "KILL", "TYPE", "normal")
            assert killed >= 1
            await bus.publish(bus.streams.events, [b"two"])
            await until(lambda: len(handler.done) == 2, "entry after the kill handled")
            assert consumer.state is ServiceState.RUNNING
    finally:
        await client.aclose()
        await admin.aclose()
    assert [e.data for e in handler.done] == [b"one", b"two"]


class RestartableRedis:
    """A redis-server on a fixed port that can be stopped and started again (empty: nothing persisted)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server") or "redis-server"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.mark.redis
@pytest.mark.slow
async def test_consumer_rides_out_a_redis_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = RestartableRedis(tmp_path)
    server.start()
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        await until(lambda: _pings(url), "the private server up")
        client = await connect_redis(url)
        bus = RedisBus(client, StreamSettings(prefix=f"t-{uuid.uuid4().hex[:8]}", block_ms=50))
        handler = Recorder()
        caplog.set_level(logging.INFO, logger="events.bus")
        async with bus.consumer(bus.streams.events, "g", "c1", handler):
            await bus.publish(bus.streams.events, [b"one"])
            await until(lambda: len(handler.done) == 1, "first entry handled")
            server.stop()
            await until(lambda: "lost Redis" in caplog.text, "the outage noticed", timeout_s=30)
            server.start()
            await until(lambda: _pings(url), "the server back")
            await bus.publish(bus.streams.events, [b"two"])  # the restarted server is empty: no group yet
            await until(lambda: len(handler.done) == 2, "entry after the restart handled", timeout_s=30)
        await client.aclose()
    finally:
        server.stop()
    assert caplog.text.count("lost Redis") == 1
    assert "reconnected to Redis after" in caplog.text
    assert [e.data for e in handler.done] == [b"one", b"two"]


async def _pings(url: str) -> bool:
    client = aioredis.Redis.from_url(url)
    try:
        return bool(await client.ping())
    except OSError:
        return False
    except aioredis.ConnectionError:
        return False
    finally:
        await client.aclose()
