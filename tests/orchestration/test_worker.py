"""The worker with real subprocesses: claims, states, crashes, timeouts, cancellation, heartbeats, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

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
from tripwire.orchestration.runs import FlowRunStore
from tripwire.orchestration.states import State
from tripwire.orchestration.worker import WorkerService
from tripwire.services import ServiceState
from tripwire.settings import Settings
from tripwire.tables import workers

pytestmark = [pytest.mark.redis, pytest.mark.slow]

APPEND = """
    @flow
    def append(path: str, tag: str) -> None:
        print("appending", tag)
        with open(path, "a") as f:
            f.write(tag + "\\n")
"""

SLEEPER = """
    import os, signal, time

    @flow
    def sleeper(pid_file: str, ignore_term: bool = False) -> None:
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(pid_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)
        time.sleep(120)
"""

BOOM = """
    @flow
    def boom() -> None:
        raise ValueError("the data is bad")
"""

DIE = """
    import os, signal

    @flow
    def die(how: str) -> None:
        if how == "exit":
            os._exit(7)
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
async def emitter(redis_client, settings):
    bus = RedisBus(redis_client, settings.streams)
    yield EventEmitter(bus, settings)
    await bus.close()


@pytest.fixture
async def db(settings) -> AsyncIterator[Database]:
    db = Database(settings.effective_database_url)
    await db.start()
    yield db
    await db.stop()


@contextlib.asynccontextmanager
async def started(
    db: Database, emitter: EventEmitter, settings: Settings, *, name: str = "w1", **options
) -> AsyncIterator[WorkerService]:
    stop_grace_s = options.pop("stop_grace_s", 3.0)
    worker = WorkerService(
        db, emitter, fast_settings(settings, **options), pool="pool-a", name=name, stop_grace_s=stop_grace_s
    )
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


def _pid_of(pid_file: Path) -> int:
    return int(pid_file.read_text())


async def _running_sleeper(tmp_path: Path, db: Database, store: FlowRunStore, **parameters):
    """A sleeper run (create it, let the worker start it); returns the run and the flow's pid."""
    deployment = await insert_deployment(db, flow_file(tmp_path, "sleeper", SLEEPER))
    pid_file = tmp_path / "sleeper.pid"
    run = await create_run(store, deployment, {"pid_file": str(pid_file), **parameters})
    await await_async(run_in(store, run.id, "Running"), "the sleeper did not start")
    await await_async(pid_file.exists, "the sleeper wrote no pid")
    return run, _pid_of(pid_file)


async def _states(redis_client, settings, run_id) -> list[str]:
    events = await stream_events(redis_client, settings, "tripwire.flow-run.")
    mine = f"tripwire.flow-run.{run_id}"
    return [e.event.rsplit(".", 1)[1] for e in events if e.resource["tripwire.resource.id"] == mine]


async def test_two_workers_never_run_the_same_run(tmp_path, database, redis_client, settings) -> None:
    settings = settings.model_copy(update={"database_url": database.url})
    bus = RedisBus(redis_client, settings.streams)
    emitter = EventEmitter(bus, settings)
    store = FlowRunStore(database, emitter)
    deployment = await insert_deployment(database, flow_file(tmp_path, "append", APPEND))
    out = tmp_path / "executions.txt"
    runs = [await create_run(store, deployment, {"path": str(out), "tag": f"run-{i}"}) for i in range(6)]

    w1, w2 = started(database, emitter, settings, name="w1"), started(database, emitter, settings, name="w2")
    async with w1, w2:

        async def all_done() -> bool:
            return all(s is State.COMPLETED for s in [(await store.get(r.id)).state for r in runs])

        await await_async(all_done, "the six runs did not complete", timeout_s=90)

    assert sorted(out.read_text().split()) == sorted(f"run-{i}" for i in range(6))  # each ran exactly once
    assert {(await store.get(r.id)).worker for r in runs} <= {"w1", "w2"}
    await bus.close()


async def test_completed_run_reports_each_state_and_logs_its_output(
    tmp_path, db, emitter, redis_client, settings, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="tripwire.orchestration.worker.runs")
    store = FlowRunStore(db, emitter)
    deployment = await insert_deployment(db, flow_file(tmp_path, "append", APPEND))
    run = await create_run(store, deployment, {"path": str(tmp_path / "out.txt"), "tag": "hello"})

    async with started(db, emitter, settings):
        await await_async(run_in(store, run.id, "Completed"), "the run did not complete")

    done = await store.get(run.id)
    assert done.worker == "w1" and done.pid is not None and done.run_count == 1
    assert await _states(redis_client, settings, run.id) == ["Scheduled", "Pending", "Running", "Completed"]
    assert f"{run.name} | appending hello" in caplog.text


async def test_flow_that_raises_ends_failed(tmp_path, db, emitter, settings) -> None:
    store = FlowRunStore(db, emitter)
    run = await create_run(store, await insert_deployment(db, flow_file(tmp_path, "boom", BOOM)), {})
    async with started(db, emitter, settings):
        await await_async(run_in(store, run.id, "Failed"), "the run did not fail")
    assert "ValueError: the data is bad" in ((await store.get(run.id)).state_message or "")


RETRIED = """
    import os

    @flow(retries=1, retry_delay_seconds=1)
    def flaky(marker: str, out: str) -> None:
        with open(out, "a") as f:
            f.write(f"{os.getpid()}\\n")
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise ConnectionError("source down")
"""


async def test_a_flow_retry_stays_in_its_process_and_is_not_claimed_again(
    tmp_path, db, emitter, settings
) -> None:
    """During the retry delay the run is Scheduled, held past the delay: no poll claims it meanwhile."""
    store = FlowRunStore(db, emitter)
    out = tmp_path / "attempts.txt"
    deployment = await insert_deployment(db, flow_file(tmp_path, "flaky", RETRIED))
    run = await create_run(store, deployment, {"marker": str(tmp_path / "failed-once"), "out": str(out)})
    async with started(db, emitter, settings):
        await await_async(run_in(store, run.id, "Completed", "Failed", "Crashed"), "the run did not end")
    first, second = out.read_text().split()
    assert first == second  # both attempts in the one process
    done = await store.get(run.id)
    assert done.state is State.COMPLETED and done.run_count == 2


@pytest.mark.parametrize(
    ("how", "message"),
    [("exit", "process exited with code 7"), ("kill", "process killed by signal SIGKILL")],
)
async def test_process_that_dies_ends_crashed(tmp_path, db, emitter, settings, how, message) -> None:
    store = FlowRunStore(db, emitter)
    run = await create_run(store, await insert_deployment(db, flow_file(tmp_path, "die", DIE)), {"how": how})
    async with started(db, emitter, settings):
        await await_async(run_in(store, run.id, "Crashed"), "the run did not crash")
    assert (await store.get(run.id)).state_message == message


async def test_timeout_fails_the_run_and_stops_its_process(
    tmp_path, db, emitter, redis_client, settings
) -> None:
    store = FlowRunStore(db, emitter)
    deployment = await insert_deployment(db, flow_file(tmp_path, "sleeper", SLEEPER), timeout_seconds=1.5)
    pid_file = tmp_path / "sleeper.pid"
    run = await create_run(store, deployment, {"pid_file": str(pid_file)})
    async with started(db, emitter, settings) as worker:
        await await_async(pid_file.exists, "the sleeper wrote no pid")
        await await_async(run_in(store, run.id, "Failed"), "the run did not time out")
        await await_async(lambda: not pid_alive(_pid_of(pid_file)), "the timed-out process is still alive")
        await await_async(lambda: worker.running == 0, "the worker still holds the run")
    failed = await store.get(run.id)
    assert failed.state_message == "timed out after 1.5 s"
    assert await _states(redis_client, settings, run.id) == ["Scheduled", "Pending", "Running", "Failed"]


@pytest.mark.parametrize("ignore_term", [False, True], ids=["stops-on-sigterm", "killed-after-grace"])
async def test_cancelling_a_running_run_stops_its_process(
    tmp_path, db, emitter, redis_client, settings, ignore_term
) -> None:
    store = FlowRunStore(db, emitter)
    async with started(db, emitter, settings, cancel_grace_s=0.5):
        run, pid = await _running_sleeper(tmp_path, db, store, ignore_term=ignore_term)
        await store.cancel(run.id, message="stuck")
        await await_async(run_in(store, run.id, "Cancelled"), "the run was not cancelled")
        assert not pid_alive(pid)
    assert await _states(redis_client, settings, run.id) == [
        "Scheduled", "Pending", "Running", "Cancelling", "Cancelled",
    ]  # fmt: skip


async def test_heartbeats_register_the_worker_until_it_stops(db, emitter, redis_client, settings) -> None:
    async with started(db, emitter, settings, name="beating") as worker:
        assert worker.state is ServiceState.RUNNING

        async def beats() -> int:
            return len(await stream_events(redis_client, settings, "tripwire.worker.heartbeat"))

        await await_async(lambda: _at_least(beats, 3), "fewer than 3 heartbeats")
        async with db.read() as conn:
            row = (await conn.execute(select(workers).where(workers.c.name == "beating"))).one()
        assert row.status == "online" and row.work_pool == "pool-a"
    events = await stream_events(redis_client, settings, "tripwire.worker.")
    assert events[0].event == "tripwire.worker.started" and events[-1].event == "tripwire.worker.stopped"
    beat = next(e for e in events if e.event == "tripwire.worker.heartbeat")
    assert beat.resource["tripwire.resource.id"] == "tripwire.worker.beating"
    assert beat.payload["pool"] == "pool-a" and beat.payload["running"] == 0
    assert beat.related[0]["tripwire.resource.id"] == "tripwire.work-pool.pool-a"
    async with db.read() as conn:
        status = (await conn.execute(select(workers.c.status).where(workers.c.name == "beating"))).scalar()
    assert status == "stopped" and worker.state is ServiceState.STOPPED


async def _at_least(count, n: int) -> bool:
    return await count() >= n


async def test_runs_held_from_a_previous_life_crash_at_start(db, emitter, settings) -> None:
    store = FlowRunStore(db, emitter)
    run = await create_run(store, None, {})
    await store.claim("pool-a", "same-name")
    await store.transition(run.id, State.RUNNING)
    async with started(db, emitter, settings, name="same-name"):
        crashed = await store.get(run.id)
    assert crashed.state is State.CRASHED
    assert crashed.state_message == "worker same-name restarted while the run was Running"


async def test_stopping_the_worker_crashes_the_runs_still_going(tmp_path, db, emitter, settings) -> None:
    store = FlowRunStore(db, emitter)
    async with started(db, emitter, settings, stop_grace_s=0.2):
        run, pid = await _running_sleeper(tmp_path, db, store)
    crashed = await store.get(run.id)
    assert crashed.state is State.CRASHED
    assert crashed.state_message == "worker w1 stopped before the run finished"
    assert not pid_alive(pid)


async def test_worker_factory_runs_the_pool_of_the_settings(tmp_path, settings) -> None:
    """What ``server start`` / ``services run worker`` get: the worker of ``orchestration.work_pool``."""
    from tripwire.orchestration.worker import worker_factory
    from tripwire.runner import running

    settings = fast_settings(settings, work_pool="pool-a")
    async with running(settings, services=["worker"], factories={"worker": worker_factory}) as ctx:
        (worker,) = ctx.services
        assert isinstance(worker, WorkerService) and worker.pool == "pool-a"
        store = FlowRunStore(ctx.db, EventEmitter(ctx.bus, settings))
        deployment = await insert_deployment(ctx.db, flow_file(tmp_path, "append", APPEND))
        run = await create_run(store, deployment, {"path": str(tmp_path / "out.txt"), "tag": "x"})
        await await_async(run_in(store, run.id, "Completed"), "the run did not complete")


async def test_cli_worker_stops_gracefully_on_sigterm(tmp_path, redis_server, db, settings) -> None:
    env = tripwire_env(
        tmp_path, redis_server,
        TRIPWIRE_STREAMS__PREFIX=settings.streams.prefix,
        TRIPWIRE_DATABASE_URL=settings.effective_database_url,
        TRIPWIRE_ORCHESTRATION__HEARTBEAT_S="0.2",
    )  # fmt: skip
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tripwire", "worker", "start", "--pool", "pool-a", "--name", "cli-worker",
            "--concurrency", "3", env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    async def status() -> str | None:
        async with db.read() as conn:
            query = select(workers.c.status).where(workers.c.name == "cli-worker")
            return (await conn.execute(query)).scalar()

    try:
        await await_async(lambda: _is(status, "online"), "the worker did not register", log=log)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert await status() == "stopped"
    assert "up to 3 runs at once" in log.read_text()


async def _is(read, value) -> bool:
    return await read() == value
