"""``execute``: one flow run in a process — the SQL reporter, exit codes, setup errors.

The reporter is exercised in-process (SQLite and PostgreSQL); the process through
``python -m tripwire.orchestration.execute`` with the environment a worker gives it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import pytest

from events.bus import RedisBus
from events.emit import EventEmitter
from tests.orchestration.worker_support import create_run, flow_file, insert_deployment, stream_events
from tripwire.db import Database
from tripwire.orchestration.execute import EXIT_ABORTED, EXIT_COMPLETED, EXIT_FAILED, EXIT_SETUP
from tripwire.orchestration.processes import child_environment
from tripwire.orchestration.reporting import FlowRunInfo, RunAborted, TaskRunInfo
from tripwire.orchestration.runs import FlowRun, FlowRunStore
from tripwire.orchestration.sql_reporter import SqlRunReporter
from tripwire.orchestration.states import State

pytestmark = [pytest.mark.redis]


@pytest.fixture
async def emitter(redis_client, settings):
    bus = RedisBus(redis_client, settings.streams)
    yield EventEmitter(bus, settings)
    await bus.close()


def _info(run: FlowRun) -> FlowRunInfo:
    return FlowRunInfo(id=run.id, name=run.name, flow_name=run.flow_name, work_pool=run.work_pool)


async def _claimed(store: FlowRunStore) -> FlowRun:
    run = await create_run(store, None, {})
    (claimed,) = await store.claim("pool-a", "w1")
    assert claimed.id == run.id
    return claimed


# --- the reporter -------------------------------------------------------------------------------------


@pytest.fixture
async def reporter(database, settings):
    reporter = SqlRunReporter(settings.model_copy(update={"database_url": database.url}))
    await asyncio.to_thread(reporter.open)
    yield reporter
    await asyncio.to_thread(reporter.close, 5.0)


async def test_reporter_writes_flow_states_and_emits_task_events_before_the_end(
    database, emitter, reporter, redis_client, settings
) -> None:
    store = FlowRunStore(database, emitter)
    run = await _claimed(store)
    info = _info(run)
    task = TaskRunInfo(id=uuid.uuid4(), name="add-1", task_name="add", flow_run=info)

    await asyncio.to_thread(reporter.flow_run, info, State.RUNNING, None)
    running = await store.get(run.id)
    assert running.state is State.RUNNING and running.pid == os.getpid()
    changes = [(State.PENDING, None), (State.RUNNING, State.PENDING), (State.COMPLETED, State.RUNNING)]
    for state, previous in changes:
        task.run_count += state is State.RUNNING
        await asyncio.to_thread(reporter.task_run, task, state, previous)
    await asyncio.to_thread(reporter.flow_run, info, State.COMPLETED, State.RUNNING, "done")

    assert (await store.get(run.id)).state is State.COMPLETED
    events = await stream_events(redis_client, settings, "tripwire.")
    assert [e.event for e in events] == [
        "tripwire.flow-run.Scheduled",
        "tripwire.flow-run.Pending",
        "tripwire.flow-run.Running",
        "tripwire.task-run.Pending",
        "tripwire.task-run.Running",
        "tripwire.task-run.Completed",
        "tripwire.flow-run.Completed",
    ]
    roles = {r["tripwire.resource.role"] for r in events[-2].related}
    assert {"flow-run", "flow", "work-pool"} <= roles


async def test_reporter_aborts_a_run_cancelled_before_it_started(database, emitter, reporter) -> None:
    store = FlowRunStore(database, emitter)
    run = await _claimed(store)
    await store.cancel(run.id)
    with pytest.raises(RunAborted, match="is Cancelling; it cannot move to Running"):
        await asyncio.to_thread(reporter.flow_run, _info(run), State.RUNNING, None)
    assert (await store.get(run.id)).state is State.CANCELLING


async def test_reporter_drops_a_final_state_when_the_run_moved_meanwhile(database, emitter, reporter) -> None:
    """The worker marked the run timed out (Failed) while the flow was finishing: Failed stands."""
    store = FlowRunStore(database, emitter)
    run = await _claimed(store)
    await asyncio.to_thread(reporter.flow_run, _info(run), State.RUNNING, None)
    await store.transition(run.id, State.FAILED, message="timed out after 1 s")
    await asyncio.to_thread(reporter.flow_run, _info(run), State.COMPLETED, State.RUNNING)
    after = await store.get(run.id)
    assert after.state is State.FAILED and after.state_message == "timed out after 1 s"


# --- the process --------------------------------------------------------------------------------------


async def _execute(settings, run_id) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tripwire.orchestration.execute", str(run_id),
        env=child_environment(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture
async def db(settings):
    db = Database(settings.effective_database_url)
    await db.start()
    yield db
    await db.stop()


ADD = """
    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def add(a: int, b: int) -> int:
        print("adding", a, b)
        return double(a) + b
"""

BOOM = """
    @flow
    def boom() -> None:
        raise ValueError("the data is bad")
"""


async def test_completed_flow_exits_0_and_reports_each_state(
    tmp_path, db, emitter, redis_client, settings
) -> None:
    store = FlowRunStore(db, emitter)
    deployment = await insert_deployment(db, flow_file(tmp_path, "add", ADD))
    run = await create_run(store, deployment, {"a": 2, "b": 3})
    await store.claim("pool-a", "w1")

    code, out = await _execute(settings, run.id)

    assert code == EXIT_COMPLETED, out
    assert "adding 2 3" in out
    done = await store.get(run.id)
    assert done.state is State.COMPLETED and done.run_count == 1 and done.pid is not None
    events = await stream_events(redis_client, settings, "tripwire.")
    flow_events = [e.event for e in events if e.event.startswith("tripwire.flow-run.")]
    assert flow_events == [f"tripwire.flow-run.{s}" for s in ("Scheduled", "Pending", "Running", "Completed")]
    task_events = [e for e in events if e.event.startswith("tripwire.task-run.")]
    assert task_events and task_events[-1].event == "tripwire.task-run.Completed"
    assert events.index(task_events[-1]) < [e.event for e in events].index("tripwire.flow-run.Completed")


async def test_failing_flow_exits_1_and_ends_failed(tmp_path, db, emitter, settings) -> None:
    store = FlowRunStore(db, emitter)
    deployment = await insert_deployment(db, flow_file(tmp_path, "boom", BOOM))
    run = await create_run(store, deployment, {})
    await store.claim("pool-a", "w1")

    code, out = await _execute(settings, run.id)

    assert code == EXIT_FAILED, out
    failed = await store.get(run.id)
    assert failed.state is State.FAILED and "the data is bad" in (failed.state_message or "")


@pytest.mark.parametrize("case", ["no-deployment", "missing-deployment", "bad-entrypoint"])
async def test_setup_errors_exit_2_and_fail_the_run_saying_why(tmp_path, db, emitter, settings, case) -> None:
    store = FlowRunStore(db, emitter)
    deployment_id = None
    expected = "has no deployment"
    if case == "missing-deployment":
        deployment_id, expected = uuid.uuid4(), "does not exist"
    elif case == "bad-entrypoint":
        deployment_id = await insert_deployment(db, f"{tmp_path / 'nowhere.py'}:nothing")
        expected = "cannot load flow from entrypoint"
    run = await create_run(store, deployment_id, {})
    await store.claim("pool-a", "w1")

    code, out = await _execute(settings, run.id)

    assert code == EXIT_SETUP, out
    failed = await store.get(run.id)
    assert failed.state is State.FAILED and expected in (failed.state_message or "")


async def test_unknown_run_exits_2(settings) -> None:
    code, out = await _execute(settings, uuid.uuid4())
    assert code == EXIT_SETUP and "no flow run with id" in out


async def test_run_cancelled_before_start_exits_3_without_running(tmp_path, db, emitter, settings) -> None:
    store = FlowRunStore(db, emitter)
    marker = tmp_path / "ran"
    body = f"""
    @flow
    def touch() -> None:
        open({str(marker)!r}, "w").close()
    """
    deployment = await insert_deployment(db, flow_file(tmp_path, "touch", body))
    run = await create_run(store, deployment, {})
    await store.claim("pool-a", "w1")
    await store.cancel(run.id)

    code, out = await _execute(settings, run.id)

    assert code == EXIT_ABORTED, out
    assert (await store.get(run.id)).state is State.CANCELLING and not marker.exists()


async def test_async_flow_with_a_retry_goes_through_scheduled_in_sql(
    tmp_path, db, emitter, redis_client, settings
) -> None:
    """The flow's own retry: Running -> Scheduled -> Running, each write expecting the state before."""
    store = FlowRunStore(db, emitter)
    marker = tmp_path / "attempted"
    body = f"""
    import os

    @flow(retries=1, retry_delay_seconds=0)
    async def flaky() -> str:
        if not os.path.exists({str(marker)!r}):
            open({str(marker)!r}, "w").close()
            raise ConnectionError("source down")
        return "ok"
    """
    run = await create_run(store, await insert_deployment(db, flow_file(tmp_path, "flaky", body)), {})
    await store.claim("pool-a", "w1")

    code, out = await _execute(settings, run.id)

    assert code == EXIT_COMPLETED, out
    done = await store.get(run.id)
    assert done.state is State.COMPLETED and done.run_count == 2
    events = await stream_events(redis_client, settings, "tripwire.flow-run.")
    assert [e.event.rsplit(".", 1)[1] for e in events] == [
        "Scheduled", "Pending", "Running", "Scheduled", "Running", "Completed",
    ]  # fmt: skip
    assert events[3].payload["retry"] == 1
