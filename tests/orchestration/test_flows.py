"""@flow: calling, parameters from type hints, entrypoints, options, timeouts, hooks, log_prints."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
import threading
from datetime import date
from pathlib import Path

import pytest
from pydantic import BaseModel

import tripwire
from tests.orchestration.flow_support import harness_fixture  # noqa: F401
from tripwire.errors import ValidationFailed
from tripwire.orchestration.engine import FinalState, RunTimedOut, run_flow
from tripwire.orchestration.flows import Flow, flow, load_flow
from tripwire.orchestration.states import State
from tripwire.orchestration.tasks import task


class Window(BaseModel):
    days: int


class Opaque:
    """A class pydantic has no schema for: checked with isinstance."""


@flow(name="report", description="Daily report.", version="3")
def report(day: date, limit: int = 10, window: Window | None = None, tags: list[str] | None = None) -> dict:
    return {"day": day, "limit": limit, "window": window, "tags": tags}


@flow
def takes_opaque(thing: Opaque, json: int = 1) -> str:
    return type(thing).__name__


def test_public_names() -> None:
    assert tripwire.flow is flow and tripwire.Flow is Flow
    assert isinstance(report, Flow) and report.name == "report" and report.version == "3"
    assert report.description == "Daily report." and report.__name__ == "report"


def test_sync_flow_returns_its_result_with_coerced_parameters(harness) -> None:
    result = report("2026-11-21", limit="5", window={"days": 7})
    assert result == {"day": date(2026, 11, 21), "limit": 5, "window": Window(days=7), "tags": None}
    assert [r.state for r in harness.recorder.reports] == ["Pending", "Running", "Completed"]


def test_async_flow_call_returns_a_coroutine(harness) -> None:
    @flow
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    coro = double("4")
    assert asyncio.iscoroutine(coro)
    assert asyncio.run(coro) == 8
    assert run_flow(double, {"x": 5}) == 10  # a fresh loop for an async flow


@pytest.mark.parametrize(
    ("parameters", "loc", "message"),
    [
        pytest.param({"day": "not a date"}, "parameters.day", "date", id="bad-date"),
        pytest.param({"day": "2026-11-21", "limit": "x"}, "parameters.limit", "integer", id="bad-int"),
        pytest.param(
            {"day": "2026-11-21", "window": {"days": "?"}}, "parameters.window.days", "integer", id="nested"
        ),
        pytest.param({}, "parameters.day", "Field required", id="missing"),
        pytest.param(
            {"day": "2026-11-21", "limt": 3},
            "parameters.limt",
            "unknown parameter; report takes day",
            id="unknown",
        ),
    ],
)
def test_bad_parameters_name_the_parameter(parameters, loc, message) -> None:
    with pytest.raises(ValidationFailed) as info:
        report.validate_parameters(parameters)
    (where, text), *_ = info.value.errors
    assert where == loc and message in text


def test_validate_parameters_returns_only_what_was_given_coerced() -> None:
    assert report.validate_parameters({"day": "2026-11-21"}) == {"day": date(2026, 11, 21)}


def test_direct_call_with_a_bad_parameter_reports_failed(harness) -> None:
    with pytest.raises(ValidationFailed, match=r"parameters\.limit"):
        report("2026-11-21", limit="many")
    assert [(r.state, r.previous) for r in harness.recorder.reports] == [
        ("Pending", None),
        ("Failed", "Pending"),
    ]


def test_other_classes_are_checked_with_isinstance_and_any_name_works(harness) -> None:
    assert takes_opaque(Opaque(), json="2") == "Opaque"
    with pytest.raises(ValidationFailed, match=r"parameters\.thing"):
        takes_opaque.validate_parameters({"thing": 3})


def test_var_keyword_takes_undeclared_parameters(harness) -> None:
    @flow
    def loose(a: int, **rest: int) -> dict:
        return {"a": a, **rest}

    assert run_flow(loose, {"a": "1", "b": "2"}) == {"a": 1, "b": 2}
    with pytest.raises(ValidationFailed, match=r"parameters\.rest\.b"):
        loose.validate_parameters({"a": 1, "b": "x"})


def test_parameter_schema() -> None:
    schema = report.parameter_schema()
    assert schema["title"] == "report"
    assert schema["required"] == ["day"]
    props = schema["properties"]
    assert list(props) == ["day", "limit", "window", "tags"]
    assert props["day"]["format"] == "date" and props["limit"]["default"] == 10
    opaque = takes_opaque.parameter_schema()
    assert opaque["properties"]["thing"] == {"title": "Thing"}  # no JSON form: anything, checked at run time
    assert opaque["properties"]["json"]["type"] == "integer"


def test_options_are_checked_when_the_flow_is_defined() -> None:
    with pytest.raises(ValidationFailed) as info:
        flow(retries=-1, retry_delay_seconds=[1, "x"], timeout_seconds=0)(lambda: None)
    assert [loc for loc, _ in info.value.errors] == ["retries", "retry_delay_seconds[1]", "timeout_seconds"]


def test_with_options_copies_the_flow() -> None:
    fast = report.with_options(name="report-fast", retries=2)
    assert (fast.name, fast.retries, fast.version, report.retries) == ("report-fast", 2, "3", 0)


# --- entrypoints -----------------------------------------------------------------------------------------


def test_entrypoint_of_a_flow_is_its_file_and_qualname() -> None:
    assert report.entrypoint == f"{Path(__file__).resolve()}:report"


def test_load_flow_from_a_file_and_from_a_module(tmp_path) -> None:
    path = tmp_path / "my_pipeline_flows.py"
    path.write_text(
        textwrap.dedent("""
        from tripwire import flow, task

        @task
        def inc(x: int) -> int:
            return x + 1

        @flow(name="pipeline")
        def pipeline(x: int) -> int:
            return inc(x)

        not_a_flow = 3
    """)
    )
    loaded = load_flow(f"{path}:pipeline")
    assert loaded.name == "pipeline" and loaded.entrypoint == f"{path.resolve()}:pipeline"
    assert load_flow(loaded.entrypoint) is loaded
    assert load_flow("my_pipeline_flows:pipeline") is loaded  # the file's dir is on sys.path, stem = module
    assert load_flow("tests.orchestration.test_flows:report") is report
    sys.modules.pop("my_pipeline_flows", None)
    sys.path.remove(str(tmp_path))


@pytest.mark.parametrize(
    ("entrypoint", "message"),
    [
        pytest.param("nowhere/missing.py:f", "no file", id="missing-file"),
        pytest.param("no_such_module_xyz:f", "no module named 'no_such_module_xyz'", id="missing-module"),
        pytest.param("tests.orchestration.test_flows:nope", "has no 'nope'", id="missing-name"),
        pytest.param(
            "tests.orchestration.test_flows:Window", "is a ModelMetaclass, not a flow", id="not-a-flow"
        ),
        pytest.param("just-a-name", "is not <file.py or module>:<function name>", id="no-colon"),
    ],
)
def test_load_flow_errors_name_the_entrypoint(entrypoint, message) -> None:
    with pytest.raises(ValidationFailed) as info:
        load_flow(entrypoint)
    ((loc, text),) = info.value.errors
    assert loc == "entrypoint" and message in text


# --- timeouts, hooks, log_prints -------------------------------------------------------------------------


def test_sync_flow_timeout_fails_the_run_and_leaves_the_body_running(harness) -> None:
    release = threading.Event()
    finished = threading.Event()

    @flow(timeout_seconds=0.05)
    def stuck() -> None:
        release.wait(30)
        finished.set()

    with pytest.raises(RunTimedOut, match=r"flow run 'stuck-.*' timed out after 0\.05 s"):
        stuck()
    assert [r.state for r in harness.recorder.reports] == ["Pending", "Running", "Failed"]
    assert harness.recorder.reports[-1].payload == {"error": "RunTimedOut"}
    assert not finished.is_set()  # note 7: the body was not killed
    release.set()
    assert finished.wait(10)


def test_async_flow_timeout_cancels_the_body(harness) -> None:
    cancelled = []

    @flow(timeout_seconds=0.05)
    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(RunTimedOut):
        asyncio.run(stuck())
    assert cancelled == [True]
    assert [r.state for r in harness.recorder.reports] == ["Pending", "Running", "Failed"]


def test_hooks_get_the_flow_the_run_and_the_final_state(harness) -> None:
    seen = []

    def on_completion(f, run, state):
        seen.append(("completion", f, run.name, state))

    def on_failure(f, run, state):
        seen.append(("failure", f, run.name, state.type, type(state.error).__name__, state.message))

    def broken_hook(f, run, state):
        raise RuntimeError("hook bug")

    @flow(on_completion=[broken_hook, on_completion], on_failure=[on_failure, broken_hook])
    def maybe(fail: bool) -> str:
        if fail:
            raise ValueError("asked to")
        return "ok"

    assert maybe(False) == "ok"
    with pytest.raises(ValueError, match="asked to"):
        maybe(True)
    (completion_run, failure_run) = harness.recorder.runs("flow-run")
    assert seen == [
        ("completion", maybe, completion_run.name, FinalState(State.COMPLETED, result="ok")),
        ("failure", maybe, failure_run.name, State.FAILED, "ValueError", "ValueError: asked to"),
    ]
    assert harness.recorder.states_of(failure_run.id) == ["Pending", "Running", "Failed"]


def test_async_hook_of_an_async_flow_is_awaited(harness) -> None:
    seen = []

    async def hook(f, run, state):
        await asyncio.sleep(0)
        seen.append(state.result)

    @flow(on_completion=hook)
    async def job() -> int:
        return 7

    assert asyncio.run(job()) == 7
    assert seen == [7]


def test_log_prints_sends_print_to_the_flow_run_logger(harness, caplog, capsys) -> None:
    @task
    def inner() -> None:
        print("from the task")

    @task(log_prints=False)
    def quiet() -> None:
        print("not logged")

    @flow(log_prints=True)
    def chatty() -> None:
        print("from the flow", 1)
        inner()
        quiet()
        print("to stderr", file=sys.stderr)

    @flow
    def silent() -> None:
        print("not logged either")

    with caplog.at_level(logging.INFO, logger="tripwire"):
        chatty()
        silent()
    logged = [
        (r.name, r.getMessage())
        for r in caplog.records
        if "from" in r.getMessage() or "not" in r.getMessage()
    ]
    assert logged == [("tripwire.flow_runs", "from the flow 1"), ("tripwire.task_runs", "from the task")]
    flow_record = next(r for r in caplog.records if r.getMessage() == "from the flow 1")
    assert flow_record.flow_run_name.startswith("chatty-")
    assert "from the flow 1" in capsys.readouterr().out  # still printed


def test_log_prints_is_per_thread(harness, caplog) -> None:
    """A print in another thread while a log_prints flow runs is not logged (context variables)."""
    outside = threading.Thread(target=print, args=("other thread",))

    @flow(log_prints=True)
    def chatty() -> None:
        outside.start()
        outside.join()

    with caplog.at_level(logging.INFO, logger="tripwire"):
        chatty()
    assert "other thread" not in [r.getMessage() for r in caplog.records]
