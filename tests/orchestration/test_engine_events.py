"""The exact state sequences of flow runs and task runs (engine.py notes 1-6), recorded and on Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import pytest
import redis

from events.codec import decode_event
from tests.conftest import free_port
from tests.engine import tripwire_env
from tests.orchestration.flow_support import harness_fixture  # noqa: F401
from tripwire.errors import ValidationFailed
from tripwire.orchestration.context import use_runtime
from tripwire.orchestration.engine import run_flow
from tripwire.orchestration.flows import flow
from tripwire.orchestration.reporting import FlowRunInfo, RunAborted
from tripwire.orchestration.sink import EventReporter, EventSink
from tripwire.orchestration.tasks import task


def retried_flow():
    """A flow whose task fails once, then succeeds on its retry."""
    attempts = []

    @task(retries=2, retry_delay_seconds=[3, 30], tags=["io"])
    def extract(n: int) -> int:
        attempts.append(n)
        if len(attempts) == 1:
            raise ConnectionError("source down")
        return n * 10

    @task
    def load(rows: int) -> str:
        return f"{rows} rows"

    @flow(name="etl", tags=["nightly"])
    def etl(n: int) -> str:
        return load(extract(n))

    return etl, attempts


RETRIED_FLOW_SEQUENCE = [
    ("flow-run", "etl", "Pending"),
    ("flow-run", "etl", "Running"),
    ("task-run", "extract", "Pending"),
    ("task-run", "extract", "Running"),
    ("task-run", "extract", "Scheduled"),
    ("task-run", "extract", "Running"),
    ("task-run", "extract", "Completed"),
    ("task-run", "load", "Pending"),
    ("task-run", "load", "Running"),
    ("task-run", "load", "Completed"),
    ("flow-run", "etl", "Completed"),
]


def test_flow_with_a_retried_task_reports_this_exact_sequence(harness) -> None:
    etl, attempts = retried_flow()
    assert etl(4) == "40 rows"
    assert attempts == [4, 4] and harness.sleeps == [3.0]
    assert harness.recorder.sequence() == RETRIED_FLOW_SEQUENCE
    by_state = [(r.state, r.previous, r.run_count) for r in harness.recorder.reports if r.name == "extract"]
    assert by_state == [
        ("Pending", None, 0),
        ("Running", "Pending", 1),
        ("Scheduled", "Running", 1),
        ("Running", "Scheduled", 2),
        ("Completed", "Running", 2),
    ]
    scheduled = next(r for r in harness.recorder.reports if r.state == "Scheduled")
    assert scheduled.payload == {"retry": 1, "retry_in_s": 3.0}
    assert scheduled.message == "attempt 1 failed: ConnectionError: source down; retry 1 of 2 in 3 s"
    (flow_run,) = harness.recorder.runs("flow-run")
    extract_run = harness.recorder.runs("task-run")[0]
    assert extract_run.flow_run is flow_run
    related = [(r["tripwire.resource.role"], r["tripwire.resource.id"]) for r in extract_run.related()]
    assert related == [
        ("flow-run", f"tripwire.flow-run.{flow_run.id}"),
        ("flow", "tripwire.flow.etl"),
        ("tag", "tripwire.tag.nightly"),
        ("tag", "tripwire.tag.io"),
    ]


def test_failing_flow_reports_failed_with_the_error(harness) -> None:
    @flow
    def broken() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        broken()
    assert [r.state for r in harness.recorder.reports] == ["Pending", "Running", "Failed"]
    failed = harness.recorder.reports[-1]
    assert (failed.message, failed.payload) == ("KeyError: 'missing'", {"error": "KeyError"})


def test_task_whose_retries_run_out_fails_after_each_retry_is_scheduled(harness) -> None:
    @task(retries=2, retry_delay_seconds=1)
    def never() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        never()
    assert [r.state for r in harness.recorder.reports] == [
        "Pending",
        "Running",
        "Scheduled",
        "Running",
        "Scheduled",
        "Running",
        "Failed",
    ]
    assert [r.payload.get("retry") for r in harness.recorder.reports if r.state == "Scheduled"] == [1, 2]


def test_flow_retries_go_through_scheduled(harness) -> None:
    runs = []

    @flow(retries=1, retry_delay_seconds=7)
    def twice() -> int:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("first")
        return len(runs)

    assert twice() == 2
    assert [r.state for r in harness.recorder.reports] == [
        "Pending",
        "Running",
        "Scheduled",
        "Running",
        "Completed",
    ]
    assert harness.sleeps == [7.0]


def test_worker_run_starts_at_running_and_carries_its_deployment(harness) -> None:
    @flow
    def job(x: int) -> int:
        return x + 1

    deployment_id = uuid.uuid4()
    run = FlowRunInfo(
        id=uuid.uuid4(),
        name="brisk-otter-1234",
        flow_name="job",
        deployment_id=deployment_id,
        deployment_name="job-prod",
        work_pool="pool-a",
        tags=["t1"],
    )
    assert run_flow(job, {"x": "41"}, run=run) == 42
    assert [(r.state, r.previous) for r in harness.recorder.reports] == [
        ("Running", "Pending"),
        ("Completed", "Running"),
    ]
    assert all(r.run is run for r in harness.recorder.reports)
    roles = {r["tripwire.resource.role"] for r in run.related()}
    assert roles == {"flow", "deployment", "work-pool", "tag"}


def test_worker_run_with_bad_parameters_is_failed_without_running(harness) -> None:
    ran = []

    @flow
    def job(x: int) -> None:
        ran.append(x)

    run = FlowRunInfo(id=uuid.uuid4(), name="r", flow_name="job")
    with pytest.raises(ValidationFailed) as info:
        run_flow(job, {"x": "many"}, run=run)
    assert info.value.errors[0][0] == "parameters.x"
    assert ran == []
    (failed,) = harness.recorder.reports
    assert (failed.state, failed.previous) == ("Failed", "Pending")
    assert "parameters.x" in failed.message


class AbortAt:
    """A reporter that refuses one flow-run state (like a worker whose run was cancelled)."""

    def __init__(self, inner, state: str) -> None:
        self.inner, self.state = inner, state

    def flow_run(self, run, state, previous, message=None, payload=None):
        if state.value == self.state:
            raise RunAborted(f"run {run.name} was cancelled")
        self.inner.flow_run(run, state, previous, message, payload)

    def task_run(self, *args, **kwargs):
        self.inner.task_run(*args, **kwargs)

    def close(self, timeout_s):
        return None


def test_run_aborted_by_the_reporter_stops_before_the_body(harness) -> None:
    ran = []

    @flow
    def job() -> None:
        ran.append(1)

    run = FlowRunInfo(id=uuid.uuid4(), name="r", flow_name="job")
    with pytest.raises(RunAborted, match="cancelled"):
        run_flow(job, {}, run=run, reporter=AbortAt(harness.recorder, "Running"))
    assert ran == [] and harness.recorder.reports == []


def test_async_flow_reports_the_same_sequence(harness) -> None:
    @task(retries=1)
    async def fetch(n: int) -> int:
        fetch_calls.append(n)
        if len(fetch_calls) == 1:
            raise OSError("flaky")
        return n

    @flow(name="etl")
    async def etl(n: int) -> int:
        return await fetch(n)

    fetch_calls: list[int] = []
    assert asyncio.run(etl(2)) == 2
    assert [s for _, _, s in harness.recorder.sequence()] == [
        "Pending",
        "Running",
        "Pending",
        "Running",
        "Scheduled",
        "Running",
        "Completed",
        "Completed",
    ]
    assert harness.sleeps == [0.0]


@pytest.mark.redis
def test_events_of_a_retried_flow_on_the_real_stream(settings, redis_server) -> None:
    """The same run through the real sink: the exact events land on the stream, in order."""
    etl, _ = retried_flow()
    sink = EventSink(settings)
    try:
        with use_runtime(reporter=EventReporter(sink), sleep=lambda s: None):
            assert etl(4) == "40 rows"
        assert sink.flush(10.0)
    finally:
        sink.close(5.0)
    client = redis.Redis.from_url(redis_server.url)
    try:
        entries = client.xrange(settings.streams.events)
    finally:
        client.close()
    events = [decode_event(fields[b"data"]) for _, fields in entries]
    assert [
        (
            e.event.split(".")[1],
            e.resource["tripwire.resource.name"].rsplit("-", 1)[0],
            e.event.rsplit(".", 1)[1],
        )
        for e in events
    ] == RETRIED_FLOW_SEQUENCE
    assert len({e.id for e in events}) == len(events)
    flow_run_id = events[0].resource["tripwire.resource.id"]
    assert flow_run_id.startswith("tripwire.flow-run.")
    for e in events[2:-1]:
        assert e.resource["tripwire.resource.id"].startswith("tripwire.task-run.")
        assert e.resource["tripwire.state-name"] == e.event.rsplit(".", 1)[1]
        assert e.related_by_role("flow-run")[0]["tripwire.resource.id"] == flow_run_id
        assert e.related_by_role("flow")[0]["tripwire.resource.id"] == "tripwire.flow.etl"
    retry = events[4]
    assert retry.event == "tripwire.task-run.Scheduled"
    assert retry.payload["retry"] == 1 and retry.payload["previous"] == "Running"
    assert [t["tripwire.resource.id"] for t in events[-1].related_by_role("tag")] == ["tripwire.tag.nightly"]


SCRIPT = """
from tripwire import flow, task

@task
def step(x: int) -> int:
    return x + 1

@flow
def hello(x: int) -> int:
    return step(x)

print(hello(2))
"""


@pytest.mark.redis
def test_a_flow_run_by_a_plain_script_is_on_the_stream_when_the_script_exits(tmp_path, redis_server) -> None:
    """No server, no flush call: the process-wide sink delivers at exit (sink note 5)."""
    script = tmp_path / "hello_flow.py"
    script.write_text(SCRIPT)
    env = tripwire_env(tmp_path, redis_server)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "3"), done.stderr
    client = redis.Redis.from_url(redis_server.url)
    try:
        entries = client.xrange(f"{env['TRIPWIRE_STREAMS__PREFIX']}:events")
    finally:
        client.close()
    assert [decode_event(f[b"data"]).event for _, f in entries] == [
        "tripwire.flow-run.Pending",
        "tripwire.flow-run.Running",
        "tripwire.task-run.Pending",
        "tripwire.task-run.Running",
        "tripwire.task-run.Completed",
        "tripwire.flow-run.Completed",
    ]


def test_with_redis_down_a_script_still_runs_and_keeps_its_events(tmp_path) -> None:
    script = tmp_path / "hello_flow.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    env |= {
        "TRIPWIRE_HOME": str(tmp_path / "home"),
        "TRIPWIRE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "3"), done.stderr
    (outbox,) = (tmp_path / "home" / "outbox").glob("*.jsonl")
    kept = [json.loads(line)["event"] for line in outbox.read_text().splitlines()]
    assert (len(kept), kept[-1]) == (6, "tripwire.flow-run.Completed")
    assert "run events not delivered; kept in" in done.stderr
