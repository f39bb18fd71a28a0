"""FlowRunStore against SQLite and PostgreSQL, with its events on a real Redis stream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from events.bus import RedisBus
from events.codec import decode_event
from events.emit import EventEmitter
from tripwire.errors import Conflict, NotFound
from tripwire.orchestration.runs import FlowRunStore, NewFlowRun
from tripwire.orchestration.states import State

pytestmark = [pytest.mark.redis]

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
async def emitter(redis_client, settings):
    bus = RedisBus(redis_client, settings.streams)
    yield EventEmitter(bus, settings)
    await bus.close()


async def _events(redis_client, settings) -> list:
    entries = await redis_client.xrange(settings.streams.events)
    return [decode_event(fields[b"data"]) for _, fields in entries]


async def test_lifecycle_writes_and_announces_each_state(database, emitter, redis_client, settings) -> None:
    clock = [T0]
    store = FlowRunStore(database, emitter, clock=lambda: clock[0])
    run, created = await store.create(
        NewFlowRun(flow_name="etl", parameters={"n": 1}, work_pool="default", tags=["nightly"])
    )
    assert created and run.state is State.SCHEDULED and run.version == 1
    (claimed,) = await store.claim("default", "w1")
    assert claimed.id == run.id and claimed.state is State.PENDING and claimed.worker == "w1"
    assert await store.claim("default", "w2") == []
    running = await store.transition(run.id, State.RUNNING, expect=[State.PENDING], pid=123)
    assert running.run_count == 1 and running.start_time == T0 and running.pid == 123
    done = await store.transition(run.id, State.COMPLETED)
    assert done.end_time == T0
    with pytest.raises(Conflict, match="is Completed; it cannot move to Running"):
        await store.transition(run.id, State.RUNNING)
    events = await _events(redis_client, settings)
    assert [e.event for e in events] == [
        "tripwire.flow-run.Scheduled",
        "tripwire.flow-run.Pending",
        "tripwire.flow-run.Running",
        "tripwire.flow-run.Completed",
    ]
    last = events[-1]
    assert last.resource["tripwire.resource.id"] == f"tripwire.flow-run.{run.id}"
    assert last.payload["previous"] == "Running"
    roles = {r["tripwire.resource.role"]: r["tripwire.resource.id"] for r in last.related}
    assert roles == {
        "flow": "tripwire.flow.etl",
        "work-pool": "tripwire.work-pool.default",
        "tag": "tripwire.tag.nightly",
    }


async def test_idempotency_key_creates_once_and_claims_never_double(database) -> None:
    store = FlowRunStore(database, None, clock=lambda: T0)
    first, created = await store.create(
        NewFlowRun(flow_name="f", parameters={}, idempotency_key="k", work_pool="p")
    )
    again, created_again = await store.create(NewFlowRun(flow_name="f", parameters={}, idempotency_key="k"))
    assert created and not created_again and again.id == first.id
    for i in range(9):
        await store.create(NewFlowRun(flow_name="f", parameters={"i": i}, work_pool="p"))
    await store.create(
        NewFlowRun(flow_name="f", parameters={}, work_pool="p", scheduled_time=T0 + timedelta(hours=1))
    )
    claims = await asyncio.gather(*(store.claim("p", f"w{i}", limit=3) for i in range(5)))
    ids = [run.id for batch in claims for run in batch]
    assert len(ids) == len(set(ids)) == 10  # the future run is not due
    with pytest.raises(NotFound):
        await store.get(__import__("uuid").uuid4())
