"""@task: retries and their delays, submit/map (sync and async), futures as arguments, timeouts, hooks."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

import tripwire
from tests.orchestration.flow_support import harness_fixture  # noqa: F401
from tripwire.errors import ValidationFailed
from tripwire.orchestration.context import use_runtime
from tripwire.orchestration.engine import FinalState, RunTimedOut
from tripwire.orchestration.flows import flow
from tripwire.orchestration.futures import TaskFuture, unmapped
from tripwire.orchestration.states import State
from tripwire.orchestration.tasks import Task, task


def failing_times(n: int, exc: type[Exception] = ValueError):
    """A body that fails ``n`` times, then returns the number of attempts; ``calls`` counts them."""
    calls: list[int] = []

    def body(x: int = 0) -> int:
        calls.append(x)
        if len(calls) <= n:
            raise exc(f"attempt {len(calls)}")
        return len(calls)

    return body, calls


def test_public_names() -> None:
    assert tripwire.task is task and tripwire.Task is Task and tripwire.unmapped is unmapped


# --- retries ---------------------------------------------------------------------------------------------


def test_retries_run_the_body_again_until_it_succeeds(harness) -> None:
    body, calls = failing_times(2)
    flaky = task(retries=3)(body)
    assert flaky() == 3
    assert len(calls) == 3 and harness.sleeps == [0.0, 0.0]


def test_delays_list_is_indexed_by_retry_and_its_last_item_repeats(harness) -> None:
    body, _ = failing_times(4)
    flaky = task(retries=4, retry_delay_seconds=[1, 10, 60])(body)
    assert flaky() == 5
    assert harness.sleeps == [1.0, 10.0, 60.0, 60.0]
    scheduled = [r.payload["retry_in_s"] for r in harness.recorder.reports if r.state == "Scheduled"]
    assert scheduled == [1.0, 10.0, 60.0, 60.0]


def test_no_retry_left_raises_the_last_error(harness) -> None:
    body, calls = failing_times(5)
    with pytest.raises(ValueError, match="attempt 3"):
        task(retries=2, retry_delay_seconds=2)(body)()
    assert len(calls) == 3 and harness.sleeps == [2.0, 2.0]


def test_jitter_spreads_the_delay_within_its_factor(harness) -> None:
    body, _ = failing_times(3)
    with use_runtime(rng=random.Random(7)):
        task(retries=3, retry_delay_seconds=10, retry_jitter_factor=0.5)(body)()
    expected_rng = random.Random(7)
    assert harness.sleeps == [10 * expected_rng.uniform(0.5, 1.5) for _ in range(3)]
    assert all(5.0 <= s <= 15.0 for s in harness.sleeps) and len(set(harness.sleeps)) == 3


def test_async_task_retries_with_the_async_sleep(harness) -> None:
    calls = []

    @task(retries=2, retry_delay_seconds=[4, 8])
    async def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("again")
        return len(calls)

    assert asyncio.run(flaky()) == 3
    assert harness.sleeps == [4.0, 8.0]


def test_options_are_checked_when_the_task_is_defined() -> None:
    with pytest.raises(ValidationFailed) as info:
        task(retries=1.5, retry_delay_seconds=-1, tags="one", on_failure=[3])(lambda: None)
    assert [loc for loc, _ in info.value.errors] == ["retries", "retry_delay_seconds", "tags"]
    with pytest.raises(ValidationFailed, match=r"on_failure\[0\]: must be callable"):
        task(on_failure=[3])(lambda: None)
    with pytest.raises(ValidationFailed, match="cache_expiration"):
        task(cache_expiration=-5)(lambda: None)


# --- outside a flow --------------------------------------------------------------------------------------


def test_task_outside_a_flow_runs_directly_with_no_flow_run_related(harness) -> None:
    @task(tags=["solo"])
    def inc(x: int) -> int:
        return x + 1

    assert inc(1) == 2
    assert [r.state for r in harness.recorder.reports] == ["Pending", "Running", "Completed"]
    run = harness.recorder.reports[0].run
    assert run.flow_run is None
    assert run.related() == [{"tripwire.resource.id": "tripwire.tag.solo", "tripwire.resource.role": "tag"}]
    with pytest.raises(RuntimeError, match=r"inc.submit\(\) needs a running flow"):
        inc.submit(1)


# --- submit and map --------------------------------------------------------------------------------------


def test_map_and_submit_in_a_sync_flow(harness) -> None:
    threads = set()

    @task
    def scale(x: int, factor: int) -> int:
        threads.add(threading.current_thread().name)
        return x * factor

    @task
    def total(values: list[int], extra: int) -> int:
        return sum(values) + extra

    @flow
    def pipeline(xs: list[int]) -> tuple[int, list[int]]:
        scaled = scale.map(xs, unmapped(10))
        extra = scale.submit(1, factor=5)
        summed = total.submit(scaled, extra)  # futures (in a list too) are resolved first
        assert isinstance(summed, TaskFuture)
        return summed.result(), [f.result() for f in scaled]

    assert pipeline([1, 2, 3]) == (65, [10, 20, 30])
    assert all(name.startswith("tripwire-pipeline-") for name in threads)
    task_runs = harness.recorder.runs("task-run")
    assert len(task_runs) == 5
    for run in task_runs:
        assert harness.recorder.states_of(run.id) == ["Pending", "Running", "Completed"]
    assert harness.recorder.sequence()[-1] == ("flow-run", "pipeline", "Completed")


def test_map_and_submit_in_an_async_flow(harness) -> None:
    loops = set()

    @task
    async def fetch(x: int) -> int:
        loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0)
        return x + 1

    @task
    def combine(values: list[int]) -> int:
        return sum(values)

    @flow
    async def pipeline(xs: list[int]) -> int:
        fetched = fetch.map(xs)
        with pytest.raises(RuntimeError, match="use `await future`"):
            fetched[0].result()  # would block the loop it runs on
        summed = combine.submit(fetched)  # a sync task waiting for async ones
        return await summed

    assert asyncio.run(pipeline([1, 2, 3])) == 9
    assert len(loops) == 1  # the async tasks ran on the flow's loop
    assert len(harness.recorder.runs("task-run")) == 4


def test_async_task_submitted_in_a_sync_flow_runs_on_its_own_loop(harness) -> None:
    @task
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 3

    @flow
    def pipeline() -> list[int]:
        return [f.result() for f in fetch.map([1, 2])]

    assert pipeline() == [3, 6]


def test_future_state_and_wait(harness) -> None:
    @task
    def boom() -> None:
        raise ValueError("bad")

    @flow
    def pipeline() -> tuple[State | None, State]:
        future = boom.submit()
        state = future.wait()
        with pytest.raises(ValueError, match="bad"):
            future.result()
        return state, future.state

    assert pipeline() == (State.FAILED, State.FAILED)


def test_a_failed_upstream_fails_the_downstream_without_running_it(harness) -> None:
    ran = []

    @task
    def boom() -> int:
        raise ValueError("upstream broke")

    @task
    def after(x: int) -> int:
        ran.append(x)
        return x

    @flow
    def pipeline() -> None:
        after.submit(boom.submit()).result()

    with pytest.raises(ValueError, match="upstream broke"):
        pipeline()
    assert ran == []
    after_run = next(r for r in harness.recorder.reports if r.name == "after" and r.state == "Failed")
    assert after_run.payload == {"error": "ValueError", "upstream_failed": True}
    assert harness.recorder.states_of(after_run.run.id) == ["Pending", "Failed"]


def test_map_argument_errors() -> None:
    @task
    def pair(a: int, b: int) -> int:
        return a + b

    @flow
    def lengths() -> None:
        pair.map([1, 2], [1])

    @flow
    def not_iterable() -> None:
        pair.map([1, 2], 3)

    with use_runtime(reporter=_Null()):
        with pytest.raises(ValueError, match="iterables of one length, got 0: 2, 1: 1"):
            lengths()
        with pytest.raises(TypeError, match=r"argument 1 is a int, not iterable; wrap it in unmapped"):
            not_iterable()


class _Null:
    def flow_run(self, *args, **kwargs):
        return None

    def task_run(self, *args, **kwargs):
        return None

    def close(self, timeout_s):
        return None


# --- timeouts --------------------------------------------------------------------------------------------


def test_sync_task_timeout_fails_the_attempt_and_is_retried(harness) -> None:
    release = threading.Event()
    attempts = []

    @task(timeout_seconds=0.05, retries=1)
    def stuck() -> None:
        attempts.append(1)
        release.wait(30)

    try:
        with pytest.raises(RunTimedOut, match=r"task run 'stuck-.*' timed out after 0.05 s"):
            stuck()
    finally:
        release.set()
    assert len(attempts) == 2
    assert [r.state for r in harness.recorder.reports] == [
        "Pending",
        "Running",
        "Scheduled",
        "Running",
        "Failed",
    ]
    assert isinstance(RunTimedOut("x", None), TimeoutError)


def test_async_task_timeout_cancels_the_body(harness) -> None:
    cancelled = []

    @task(timeout_seconds=0.05)
    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    with pytest.raises(RunTimedOut):
        asyncio.run(stuck())
    assert cancelled == [1]
    assert [r.state for r in harness.recorder.reports] == ["Pending", "Running", "Failed"]


def test_flow_timeout_cancels_task_runs_not_started(harness) -> None:
    release = threading.Event()

    @task
    def gate() -> None:
        release.wait(30)

    @task
    def later(x: None) -> None:
        return x

    @flow(timeout_seconds=0.1)
    def pipeline() -> None:
        later.submit(gate.submit()).result()

    try:
        with pytest.raises(RunTimedOut):
            pipeline()
        later_run = next(r.run for r in harness.recorder.reports if r.name == "later")
        assert harness.recorder.states_of(later_run.id) == ["Pending", "Cancelled"]
    finally:
        release.set()


def test_async_flow_timeout_cancels_its_running_async_tasks(harness) -> None:
    @task
    async def forever() -> None:
        await asyncio.Event().wait()

    @flow(timeout_seconds=0.1)
    async def pipeline() -> None:
        await forever.submit()

    with pytest.raises(RunTimedOut):
        asyncio.run(pipeline())
    (task_run,) = harness.recorder.runs("task-run")
    assert harness.recorder.states_of(task_run.id) == ["Pending", "Running", "Cancelled"]
    assert harness.recorder.sequence()[-1] == ("flow-run", "pipeline", "Failed")


# --- hooks -----------------------------------------------------------------------------------------------


def test_task_hooks_get_the_final_state_and_a_raising_hook_changes_nothing(harness) -> None:
    seen = []

    def record(t, run, state: FinalState) -> None:
        seen.append((t.name, run.task_name, state.type, state.result, type(state.error).__name__))

    def broken(t, run, state) -> None:
        raise RuntimeError("hook bug")

    @task(on_completion=[broken, record], on_failure=[record, broken])
    def maybe(fail: bool) -> int:
        if fail:
            raise KeyError("k")
        return 1

    @flow
    def pipeline() -> int:
        ok = maybe(False)
        with pytest.raises(KeyError):
            maybe(True)
        return ok

    assert pipeline() == 1
    assert seen == [
        ("maybe", "maybe", State.COMPLETED, 1, "NoneType"),
        ("maybe", "maybe", State.FAILED, None, "KeyError"),
    ]
    assert harness.recorder.sequence()[-1] == ("flow-run", "pipeline", "Completed")
