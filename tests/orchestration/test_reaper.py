"""The reaper: silent workers are declared dead once, their unfinished runs end Crashed.

SQL logic on SQLite and PostgreSQL; then a real worker process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from events.bus import RedisBus
from events.emit import EventEmitter
from tests.engine import tripwire_env
from tests.orchestration.worker_support import (
    await_async,
    create_run,
    fast_settings,
    flow_file,
    insert_deployment,
    pid_alive,
    run_in,
    stream_events,
)
from tripwire.db import Database
from tripwire.orchestration.reaper import reap_dead_workers
from tripwire.orchestration.runs import FlowRunStore, NewFlowRun
from tripwire.orchestration.states import State
from tripwire.orchestration.worker import WorkerService
from tripwire.tables import workers

pytestmark = [pytest.mark.redis]

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


async def _worker_row(db: Database, name: str, status: str, last_heartbeat: datetime) -> None:
    async with db.begin() as conn:
        await conn.execute(
            workers.insert().values(
                name=name, work_pool="p", status=status, started=T0 - timedelta(hours=1),
                last_heartbeat=last_heartbeat,
            )
        )  # fmt: skip


async def _status(db: Database, name: str) -> str:
    async with db.read() as conn:
        return (await conn.execute(select(workers.c.status).where(workers.c.name == name))).scalar_one()


async def _held_run(store: FlowRunStore, worker: str, state: State):
    """A run claimed by ``worker`` and moved to ``state`` (Pending, Running, Cancelling, Completed)."""
    run, _ = await store.create(NewFlowRun(flow_name="f", parameters={}, work_pool=f"pool-{worker}"))
    (run,) = await store.claim(f"pool-{worker}", worker)
    if state is not State.PENDING:
        run = await store.transition(run.id, State.RUNNING)
    if state is State.CANCELLING:
        run = await store.cancel(run.id)
    elif state is State.COMPLETED:
        run = await store.transition(run.id, State.COMPLETED)
    assert run.state is state
    return run


async def test_silent_worker_is_dead_and_its_unfinished_runs_crash(database) -> None:
    store = FlowRunStore(database, None, clock=lambda: T0)
    await _worker_row(database, "w-dead", "online", T0 - timedelta(seconds=31))
    await _worker_row(database, "w-live", "online", T0 - timedelta(seconds=29))
    await _worker_row(database, "w-gone", "stopped", T0 - timedelta(hours=1))
    held = [await _held_run(store, "w-dead", s) for s in (State.PENDING, State.RUNNING, State.CANCELLING)]
    done = await _held_run(store, "w-dead", State.COMPLETED)
    live = await _held_run(store, "w-live", State.RUNNING)

    (reaped,) = await reap_dead_workers(database, store, now=T0, dead_after_s=30)

    assert reaped.name == "w-dead" and reaped.newly_dead and reaped.work_pool == "p"
    assert sorted(reaped.crashed) == sorted(r.id for r in held)
    for run in held:
        after = await store.get(run.id)
        assert after.state is State.CRASHED
        assert "worker w-dead stopped heartbeating" in (after.state_message or "")
    assert (await store.get(done.id)).state is State.COMPLETED
    assert (await store.get(live.id)).state is State.RUNNING
    statuses = [await _status(database, n) for n in ("w-dead", "w-live", "w-gone")]
    assert statuses == ["dead", "online", "stopped"]
    assert await reap_dead_workers(database, store, now=T0, dead_after_s=30) == []


async def test_concurrent_reapers_declare_a_worker_dead_once(database) -> None:
    store = FlowRunStore(database, None, clock=lambda: T0)
    await _worker_row(database, "w-dead", "online", T0 - timedelta(minutes=5))
    runs = [await _held_run(store, "w-dead", State.RUNNING) for _ in range(3)]

    results = await asyncio.gather(
        *(reap_dead_workers(database, store, now=T0, dead_after_s=30) for _ in range(4))
    )

    reaped = [r for result in results for r in result]
    assert sum(r.newly_dead for r in reaped) == 1
    crashed = [run_id for r in reaped for run_id in r.crashed]
    assert sorted(crashed) == sorted(r.id for r in runs)  # each run crashed exactly once


async def test_a_worker_that_heartbeats_meanwhile_is_not_dead_and_the_caller_is_spared(database) -> None:
    store = FlowRunStore(database, None, clock=lambda: T0)
    await _worker_row(database, "me", "online", T0 - timedelta(minutes=5))
    run = await _held_run(store, "me", State.RUNNING)
    assert await reap_dead_workers(database, store, now=T0, dead_after_s=30, spare="me") == []
    assert (await store.get(run.id)).state is State.RUNNING and await _status(database, "me") == "online"


async def test_leftover_runs_of_dead_or_stopped_workers_are_swept(database) -> None:
    """A reaper that died between marking the worker dead and crashing its runs (reaper note 3)."""
    store = FlowRunStore(database, None, clock=lambda: T0)
    await _worker_row(database, "w-dead", "dead", T0 - timedelta(minutes=5))
    await _worker_row(database, "w-stopped", "stopped", T0 - timedelta(minutes=5))
    orphan = await _held_run(store, "w-dead", State.RUNNING)
    left = await _held_run(store, "w-stopped", State.PENDING)

    reaped = await reap_dead_workers(database, store, now=T0, dead_after_s=30)

    assert {(r.name, r.newly_dead, tuple(r.crashed)) for r in reaped} == {
        ("w-dead", False, (orphan.id,)),
        ("w-stopped", False, (left.id,)),
    }
    assert (await store.get(left.id)).state_message == "worker w-stopped is stopped and no longer runs it"


LONG_FLOW = """
    import os, time

    @flow
    def long_flow(pid_file: str):
        with open(pid_file, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
"""


@pytest.mark.slow
async def test_sigkilled_worker_is_reaped_and_its_run_crashes(
    tmp_path, redis_server, redis_client, settings
) -> None:
    """A worker process killed with SIGKILL: no more heartbeats; its flow's process dies with it; a live
    worker declares it dead after ``worker_dead_after_s`` and its run ends Crashed naming it."""
    env = tripwire_env(
        tmp_path, redis_server,
        TRIPWIRE_STREAMS__PREFIX=settings.streams.prefix,
        TRIPWIRE_DATABASE_URL=settings.effective_database_url,
        TRIPWIRE_ORCHESTRATION__WORKER_POLL_S="0.1",
        TRIPWIRE_ORCHESTRATION__HEARTBEAT_S="0.2",
    )  # fmt: skip
    fast = fast_settings(settings, worker_dead_after_s=1.0)
    db = Database(settings.effective_database_url)
    await db.start()
    bus = RedisBus(redis_client, settings.streams)
    emitter = EventEmitter(bus, settings)
    store = FlowRunStore(db, emitter)
    log = tmp_path / "zombie.log"
    with log.open("wb") as out:
        zombie = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tripwire", "worker", "start", "--pool", "pool-z", "--name", "zombie",
            env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    rescuer = WorkerService(db, emitter, fast, pool="other-pool", name="rescuer")
    try:
        deployment = await insert_deployment(db, flow_file(tmp_path, "long_flow", LONG_FLOW), pool="pool-z")
        pid_file = tmp_path / "flow.pid"
        run = await create_run(store, deployment, {"pid_file": str(pid_file)}, pool="pool-z")
        await await_async(run_in(store, run.id, "Running"), "the run was not Running", log=log)
        await await_async(lambda: pid_file.exists() and pid_file.read_text() != "", "the flow wrote no pid")
        flow_pid = int(pid_file.read_text())
        beats = await stream_events(redis_client, settings, "tripwire.worker.heartbeat")
        assert any(e.resource["tripwire.resource.id"] == "tripwire.worker.zombie" for e in beats)

        zombie.send_signal(signal.SIGKILL)
        await zombie.wait()
        await await_async(lambda: not pid_alive(flow_pid), "the flow's process did not die with its worker")
        assert (await store.get(run.id)).state is State.RUNNING  # nobody has noticed yet

        await rescuer.start()
        await await_async(run_in(store, run.id, "Crashed"), "the zombie's run was not crashed")
        crashed = await store.get(run.id)
        assert "worker zombie stopped heartbeating" in (crashed.state_message or "")
        assert await _status(db, "zombie") == "dead"
        events = await stream_events(redis_client, settings, "tripwire.flow-run.")
        assert [e.event for e in events if e.resource["tripwire.resource.id"].endswith(str(run.id))] == [
            "tripwire.flow-run.Scheduled",
            "tripwire.flow-run.Pending",
            "tripwire.flow-run.Running",
            "tripwire.flow-run.Crashed",
        ]
    finally:
        if zombie.returncode is None:
            zombie.kill()
            await zombie.wait()
        await rescuer.stop()
        await bus.close()
        await db.stop()
