"""The engine: takes one flow run or one task run through its states; ``run_flow`` is its entry.

Flow runs are run here; task runs in ``task_runs.py``; the state machine both share (attempts,
retries, timeouts, hooks) is ``lifecycle.py``.

Event sequences (exact; ``tests/orchestration/test_engine_events.py`` checks them). Each line is the
states reported, in order; every report becomes one ``tripwire.flow-run.<State>`` /
``tripwire.task-run.<State>`` event (``sink.EventReporter``) or a SQL write plus event (the worker's).

1. Flow called directly: Pending, Running, Completed | Failed. Bad parameters: Pending, Failed (the
   message names the parameter). With ``run=`` (a run a worker claimed, already Pending), the same
   without the Pending.
2. Retries (flow or task): after a failed attempt with retries left: Scheduled (payload ``retry``: the
   retry number from 1, ``retry_in_s``: the delay; message with the error), then Running again. So a
   task that fails once then succeeds: Pending, Running, Scheduled, Running, Completed. The delay is
   ``retry_delay_seconds`` (a number, or a list indexed by retry, its last item repeating) times a
   random factor in [1 - ``retry_jitter_factor``, 1 + ``retry_jitter_factor``] when one is set.
3. Task run: Pending (when called, or when submitted, in submission order), Running, Completed | Failed.
   Cached (``cache_key_fn`` hit): Pending, Completed (payload ``cached``: true); the body does not run.
   A future argument that failed: Pending, Failed (payload ``upstream_failed``: true); the upstream
   exception is raised. Submitted but not started when its flow run timed out: Pending, Cancelled.
4. Interrupted (KeyboardInterrupt, SystemExit): Crashed; asyncio cancellation: Cancelled. Reported on a
   best-effort basis, then the interruption propagates.
5. Failed carries ``error`` (the exception's type name) in the payload and "<Type>: <message>" as message.
6. Order between runs: a task run's events come between its flow run's Running and final state. The
   flow run waits for every task run it submitted before reporting its final state, except on its own
   timeout, where task runs not started are cancelled (3) and running ones are left running.
7. Timeouts: an async body is cancelled (``asyncio.timeout``). A sync body runs in a separate thread and
   the engine stops waiting for it: Python cannot kill a thread, so the body keeps running in the
   background until it returns; the hard stop is the worker killing the flow run's process. A timeout
   is a failed attempt (``RunTimedOut``, a ``TimeoutError``) and is retried like any other failure.
8. Hooks run after the final state is reported: ``on_completion`` / ``on_failure`` hooks are called with
   (flow or task, run info, ``FinalState``); an async hook is awaited; a hook that raises is logged and
   never changes the run's state.
9. ``reporter.flow_run`` may raise ``RunAborted``: the engine stops there, reports nothing more and
   re-raises it. Task-run reporting never stops a run (an error there is logged).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from tripwire.orchestration.context import (
    FlowRunContext,
    current_runtime,
    entered,
    flow_run_logger,
    printing_to,
)
from tripwire.orchestration.lifecycle import FinalState, RunMachine, RunTimedOut, attempts, attempts_async
from tripwire.orchestration.reporting import FlowRunInfo, RunReporter
from tripwire.orchestration.states import State
from tripwire.orchestration.task_runs import run_task, run_task_async, submit_task

if TYPE_CHECKING:
    from tripwire.orchestration.flows import Flow

__all__ = [
    "FinalState",
    "RunTimedOut",
    "run_flow",
    "run_flow_async",
    "run_task",
    "run_task_async",
    "submit_task",
]


class _FlowRun(RunMachine):
    kind = "flow run"

    def __init__(
        self,
        flow: Flow[..., Any],
        run: FlowRunInfo | None,
        reporter: RunReporter | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        runtime = current_runtime()
        if run is None:
            run_id = uuid4()
            run = FlowRunInfo(
                id=run_id, name=f"{flow.name}-{run_id.hex[:8]}", flow_name=flow.name, tags=list(flow.tags)
            )
        super().__init__(flow, run, reporter if reporter is not None else runtime.get_reporter(), runtime)
        self.log = logging.LoggerAdapter(
            flow_run_logger, {"flow_run_id": str(run.id), "flow_run_name": run.name}
        )
        self.ctx = FlowRunContext(flow, run, self.reporter, runtime, loop=loop)

    def report(
        self, state: State, message: str | None = None, payload: Mapping[str, Any] | None = None
    ) -> None:
        self.reporter.flow_run(self.info, state, self.state, message, payload)
        self.state = state

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        with entered(self.ctx), printing_to(self.print_logger(flow_run_logger)):
            yield

    def start(self, parameters: Mapping[str, Any], fresh: bool) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Report Pending (a fresh run) and validate the parameters (note 1); the call's arguments."""
        if fresh:
            self.report(State.PENDING)
        else:
            self.state = State.PENDING
        validated = self.target.validate_parameters(parameters)
        return self.target.call_arguments(validated)

    def _cancel_unstarted(self) -> None:
        for future in self.ctx.outstanding():
            if future.future.cancel():  # never started: note 3
                future.set_state(State.CANCELLED)
                with contextlib.suppress(Exception):
                    self.reporter.task_run(
                        future.task_run,
                        State.CANCELLED,
                        State.PENDING,
                        f"{self.title} ended before this task run started",
                    )

    def settle(self, exc: BaseException | None) -> None:
        if self.timed_out(exc):
            self._cancel_unstarted()
            return
        while outstanding := self.ctx.outstanding():
            concurrent.futures.wait([f.future for f in outstanding])

    async def settle_async(self, exc: BaseException | None) -> None:
        if self.timed_out(exc):
            running = [f.asyncio_task for f in self.ctx.outstanding() if f.asyncio_task is not None]
            for task in running:
                task.cancel()
            self._cancel_unstarted()
            await asyncio.gather(*running, return_exceptions=True)
            return
        while outstanding := self.ctx.outstanding():
            await asyncio.wait([asyncio.wrap_future(f.future) for f in outstanding])


def run_flow(
    flow: Flow[..., Any],
    parameters: Mapping[str, Any],
    *,
    run: FlowRunInfo | None = None,
    reporter: RunReporter | None = None,
) -> Any:
    """Run ``flow`` with ``parameters`` to its end; its result, or its exception re-raised (notes 1, 9).

    An async flow runs on a fresh event loop. ``run``: a run claimed by a worker (already Pending);
    ``reporter``: where states go (default: the event-only reporter of direct calls).
    """
    if flow.is_async:
        return asyncio.run(run_flow_async(flow, parameters, run=run, reporter=reporter))
    machine = _FlowRun(flow, run, reporter, loop=None)
    try:
        args, kwargs = machine.start(parameters, fresh=run is None)
    except Exception as exc:  # ValidationFailed: a bad parameter
        machine.call_hooks(machine.failed(exc))
        raise
    timed_out = False
    try:
        return attempts(machine, lambda: flow.fn(*args, **kwargs))
    except Exception as exc:
        timed_out = machine.timed_out(exc)
        raise
    finally:
        machine.ctx.close(wait=not timed_out)


async def run_flow_async(
    flow: Flow[..., Any],
    parameters: Mapping[str, Any],
    *,
    run: FlowRunInfo | None = None,
    reporter: RunReporter | None = None,
) -> Any:
    """``run_flow`` for an async flow, on the running loop."""
    machine = _FlowRun(flow, run, reporter, loop=asyncio.get_running_loop())
    try:
        args, kwargs = machine.start(parameters, fresh=run is None)
    except Exception as exc:  # ValidationFailed: a bad parameter
        await machine.acall_hooks(machine.failed(exc))
        raise
    try:
        return await attempts_async(machine, lambda: flow.fn(*args, **kwargs))
    finally:
        machine.ctx.close(wait=False)
