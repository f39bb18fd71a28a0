"""EventSink against a real redis-server: delivery in order, buffering through an outage, the outbox."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from events.codec import decode_event
from tests.conftest import free_port
from tests.engine import await_condition
from tripwire.orchestration.reporting import FlowRunInfo, TaskRunInfo
from tripwire.orchestration.sink import EventReporter, EventSink
from tripwire.orchestration.state_events import run_event
from tripwire.orchestration.states import State

pytestmark = [pytest.mark.redis]

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def doc(n: int, run_id: uuid.UUID | None = None) -> dict:
    """A run event document, the kind the engine puts in the sink."""
    run_id = run_id or uuid.UUID(int=n + 1)
    return run_event(
        "task-run",
        run_id,
        f"t-{n}",
        "Running",
        previous="Pending",
        occurred=T0,
        related=[],
        id_parts=("Running", n),
        payload={"n": n},
    )


def stream_ns(url: str, stream: str) -> list[int]:
    client = redis.Redis.from_url(url)
    try:
        return [decode_event(f[b"data"]).payload["n"] for _, f in client.xrange(stream)]
    finally:
        client.close()


def start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    """A redis-server on ``port`` (the sink's outage test starts it after the sink gave up once)."""
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    await_condition(up, "the redis-server answers", timeout_s=10)
    client.close()
    return proc


@pytest.fixture
def sinks() -> Iterator[list[EventSink]]:
    made: list[EventSink] = []
    yield made
    for sink in made:
        sink.close(1.0)


def test_events_reach_the_stream_in_order(settings, redis_server, sinks) -> None:
    sink = EventSink(settings)
    sinks.append(sink)
    for n in range(1200):  # more than one batch
        sink.put(doc(n))
    assert sink.flush(10.0)
    assert sink.pending == 0
    assert stream_ns(redis_server.url, settings.streams.events) == list(range(1200))


def test_buffers_while_redis_is_down_then_delivers_when_it_is_back(settings, tmp_path, sinks, caplog) -> None:
    port = free_port()
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    sink = EventSink(down, backoff_min_s=0.05, backoff_max_s=0.2)
    sinks.append(sink)
    for n in range(5):
        sink.put(doc(n))
    await_condition(lambda: sink.last_failed_attempt >= 1, "the sink tried and failed once")
    assert sink.pending == 5
    assert "cannot send run events to Redis" in caplog.text
    proc = start_redis(port, tmp_path)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        await_condition(lambda: sink.pending == 0, "the buffered events are delivered")
        assert stream_ns(url, down.streams.events) == [0, 1, 2, 3, 4]
        sink.put(doc(5))
        assert sink.flush(5.0)
        assert stream_ns(url, down.streams.events) == [0, 1, 2, 3, 4, 5]
    finally:
        sink.close(1.0)
        proc.terminate()
        proc.wait(10)


def test_flush_timeout_spills_to_the_outbox_and_the_next_sink_sends_it_first(
    settings, redis_server, sinks
) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    sink = EventSink(down, backoff_min_s=0.05, backoff_max_s=0.2)
    sinks.append(sink)
    for n in range(3):
        sink.put(doc(n))
    assert sink.flush(5.0) is False  # gives up at the first failed attempt, well before 5 s
    assert sink.pending == 0
    (spilled,) = sorted((settings.home / "outbox").glob("*.jsonl"))
    assert [json.loads(line)["payload"]["n"] for line in spilled.read_text().splitlines()] == [0, 1, 2]

    again = EventSink(settings)
    sinks.append(again)
    again.put(doc(3))
    assert again.flush(10.0)
    assert stream_ns(redis_server.url, settings.streams.events) == [0, 1, 2, 3]
    assert list((settings.home / "outbox").iterdir()) == []


def test_outbox_file_claimed_by_a_dead_process_is_sent(settings, redis_server, sinks) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    outbox = settings.home / "outbox"
    outbox.mkdir(parents=True)
    (outbox / f"1-1-aa.jsonl.claimed-{int(dead.stdout)}").write_text(json.dumps(doc(7)) + "\n")
    sink = EventSink(settings)
    sinks.append(sink)
    sink.put(doc(8))
    assert sink.flush(10.0)
    assert stream_ns(redis_server.url, settings.streams.events) == [7, 8]
    assert list(outbox.iterdir()) == []


def test_full_buffer_drops_the_oldest_with_one_warning(settings, sinks, caplog) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    sink = EventSink(down, max_buffer=5, backoff_min_s=0.05, backoff_max_s=0.2)
    sinks.append(sink)
    with caplog.at_level(logging.WARNING, logger="tripwire.orchestration.sink"):
        for n in range(8):
            sink.put(doc(n))
    assert sink.pending == 5
    assert caplog.text.count("dropping the oldest") == 1
    assert sink.flush(5.0) is False
    (spilled,) = (settings.home / "outbox").glob("*.jsonl")
    assert [json.loads(line)["payload"]["n"] for line in spilled.read_text().splitlines()] == [3, 4, 5, 6, 7]


def test_a_rejected_event_is_dropped_and_the_rest_delivered(settings, redis_server, sinks, caplog) -> None:
    sink = EventSink(settings)
    sinks.append(sink)
    bad = {**doc(1), "resource": {"tripwire.resource.id": ""}}
    for event in (doc(0), bad, doc(2)):
        sink.put(event)
    assert sink.flush(10.0)
    assert stream_ns(redis_server.url, settings.streams.events) == [0, 2]
    assert "dropped, refused by the emitter" in caplog.text


def test_event_reporter_builds_deduplicable_run_events(settings, redis_server, sinks) -> None:
    sink = EventSink(settings)
    sinks.append(sink)
    reporter = EventReporter(sink, clock=lambda: T0)
    flow_run = FlowRunInfo(
        id=uuid.uuid4(), name="calm-otter-1a2b", flow_name="etl", work_pool="p", tags=["x"]
    )
    task_run = TaskRunInfo(id=uuid.uuid4(), name="extract-1", task_name="extract", flow_run=flow_run)
    reporter.flow_run(flow_run, State.PENDING, None)
    reporter.flow_run(flow_run, State.PENDING, None)  # a re-send: same id
    task_run.run_count = 1
    reporter.task_run(task_run, State.RUNNING, State.PENDING, "go", {"extra": 1})
    reporter.close(10.0)
    client = redis.Redis.from_url(redis_server.url)
    try:
        events = [decode_event(f[b"data"]) for _, f in client.xrange(settings.streams.events)]
    finally:
        client.close()
    first, again, task_event = events
    assert first.id == again.id
    assert first.event == "tripwire.flow-run.Pending" and first.occurred == T0
    assert first.resource == {
        "tripwire.resource.id": f"tripwire.flow-run.{flow_run.id}",
        "tripwire.resource.name": "calm-otter-1a2b",
        "tripwire.state-name": "Pending",
    }
    assert {r["tripwire.resource.role"] for r in first.related} == {"flow", "work-pool", "tag"}
    assert task_event.event == "tripwire.task-run.Running"
    assert task_event.payload == {
        "state": "Running",
        "previous": "Pending",
        "message": "go",
        "run_count": 1,
        "extra": 1,
    }
    assert (
        task_event.related_by_role("flow-run")[0]["tripwire.resource.id"]
        == f"tripwire.flow-run.{flow_run.id}"
    )
