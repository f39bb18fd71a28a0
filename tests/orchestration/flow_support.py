"""Test support for flows and tasks: a recording reporter and an injected runtime (no real waiting)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tripwire.orchestration.cache import ResultCache
from tripwire.orchestration.context import use_runtime
from tripwire.orchestration.reporting import FlowRunInfo, TaskRunInfo
from tripwire.orchestration.states import State

T0 = 1_800_000_000.0


@dataclass(frozen=True)
class Report:
    kind: str  # "flow-run" | "task-run"
    run: Any
    name: str  # the flow's or task's name
    state: str
    previous: str | None
    message: str | None
    payload: dict[str, Any]
    run_count: int

    def short(self) -> tuple[str, str, str]:
        return (self.kind, self.name, self.state)


class Recorder:
    """A RunReporter that keeps every report, in order (thread-safe)."""

    def __init__(self) -> None:
        self.reports: list[Report] = []
        self._lock = threading.Lock()

    def _add(
        self,
        kind: str,
        run: Any,
        name: str,
        state: State,
        previous: State | None,
        message: str | None,
        payload: Mapping[str, Any] | None,
    ) -> None:
        report = Report(
            kind,
            run,
            name,
            state.value,
            previous.value if previous else None,
            message,
            dict(payload or {}),
            run.run_count,
        )
        with self._lock:
            self.reports.append(report)

    def flow_run(
        self,
        run: FlowRunInfo,
        state: State,
        previous: State | None,
        message: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        self._add("flow-run", run, run.flow_name, state, previous, message, payload)

    def task_run(
        self,
        run: TaskRunInfo,
        state: State,
        previous: State | None,
        message: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        self._add("task-run", run, run.task_name, state, previous, message, payload)

    def close(self, timeout_s: float) -> None:
        return None

    def sequence(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return [r.short() for r in self.reports]

    def states_of(self, run_id: Any) -> list[str]:
        with self._lock:
            return [r.state for r in self.reports if r.run.id == run_id]

    def runs(self, kind: str) -> list[Any]:
        """The distinct runs of one kind, in order of their first report."""
        with self._lock:
            seen: dict[Any, Any] = {}
            for r in self.reports:
                if r.kind == kind:
                    seen.setdefault(r.run.id, r.run)
            return list(seen.values())


@dataclass
class Harness:
    recorder: Recorder
    cache: ResultCache
    now: list[float] = field(default_factory=lambda: [T0])
    sleeps: list[float] = field(default_factory=list)

    def advance(self, seconds: float) -> None:
        self.now[0] += seconds


@pytest.fixture(name="harness")
def harness_fixture(tmp_path: Path) -> Iterator[Harness]:
    """Flows and tasks in the test report to a Recorder, sleep by recording, cache under tmp_path."""
    now = [T0]
    h = Harness(Recorder(), ResultCache(tmp_path / "results", clock=lambda: now[0]), now=now)

    async def async_sleep(seconds: float) -> None:
        h.sleeps.append(seconds)

    with use_runtime(reporter=h.recorder, cache=h.cache, sleep=h.sleeps.append, async_sleep=async_sleep):
        yield h
