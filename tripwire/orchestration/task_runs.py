"""Task runs: calling a task, submitting it to the flow run's pool or loop, and its result cache.

The states a task run goes through are ``engine.py`` notes 2-4; how futures are passed and mapped is
``futures.py``.

1. A called task runs in the caller's thread (sync) or the caller's loop (async); its future arguments
   are resolved first, then the cache is looked up (``cache.py``), then the attempts run.
2. ``submit_task`` reports Pending at once (so Pending events follow the order of submission), then
   starts the run when every future among its arguments is done: a sync task in the flow run's thread
   pool, an async task as an asyncio task on the flow's loop (async flow) or with ``asyncio.run`` in a
   pool thread (sync flow). The run uses a copy of the submitter's context (its flow run, runtime and
   print target).
3. The task run's outcome is copied into the ``TaskFuture``; a run cancelled before it started never
   runs its body.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from tripwire.orchestration.context import (
    FlowRunContext,
    TaskRunContext,
    current_flow_run,
    current_runtime,
    entered,
    print_target,
    printing_to,
    task_run_logger,
)
from tripwire.orchestration.futures import TaskFuture, collect_futures, resolve, resolve_async, when_done
from tripwire.orchestration.lifecycle import FinalState, RunMachine, attempts, attempts_async
from tripwire.orchestration.reporting import TaskRunInfo
from tripwire.orchestration.states import State

if TYPE_CHECKING:
    from tripwire.orchestration.tasks import Task

__all__ = ["new_task_run_info", "run_task", "run_task_async", "submit_task"]


class _TaskRun(RunMachine):
    kind = "task run"

    def __init__(self, task: Task[..., Any], future: TaskFuture[Any] | None = None) -> None:
        runtime = current_runtime()
        self.flow_ctx = current_flow_run()
        self.future = future
        info = future.task_run if future is not None else new_task_run_info(task, self.flow_ctx)
        reporter = self.flow_ctx.reporter if self.flow_ctx is not None else runtime.get_reporter()
        super().__init__(task, info, reporter, runtime)
        extra = {"task_run_id": str(info.id), "task_run_name": info.name}
        if info.flow_run is not None:
            extra |= {"flow_run_id": str(info.flow_run.id), "flow_run_name": info.flow_run.name}
        self.log = logging.LoggerAdapter(task_run_logger, extra)
        self.ctx = TaskRunContext(task, info, self.flow_ctx)
        self.cache_key: str | None = None
        if future is not None:
            self.state = State.PENDING  # reported by submit_task
        else:
            self.report(State.PENDING)

    def report(
        self, state: State, message: str | None = None, payload: Mapping[str, Any] | None = None
    ) -> None:
        try:
            self.reporter.task_run(self.info, state, self.state, message, payload)
        except Exception:
            self.log.exception("%s: could not report %s", self.title, state.value)
        self.state = state
        if self.future is not None:
            self.future.set_state(state)

    def print_logger(self, logger: logging.Logger) -> logging.LoggerAdapter | None:
        if self.target.log_prints is None:  # inherit the flow's setting
            return logging.LoggerAdapter(logger, self.log.extra) if print_target() is not None else None
        return super().print_logger(logger)

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        with entered(self.flow_ctx, self.ctx), printing_to(self.print_logger(task_run_logger)):
            yield

    def upstream_failed(self, exc: Exception) -> FinalState:
        return self.failed(exc, {"upstream_failed": True})

    def cached(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FinalState | None:
        """Look the call up in the result cache; report the hit (``engine`` note 3)."""
        task = self.target
        if task.cache_key_fn is None:
            return None
        try:
            bound = inspect.signature(task.fn).bind(*args, **kwargs)
            bound.apply_defaults()
            self.cache_key = task.cache_key_fn(self.ctx, dict(bound.arguments))
        except Exception:
            self.log.warning(
                "%s: no cache key (the key function failed); running it", self.title, exc_info=True
            )
            return None
        hit = self.runtime.get_cache().get(self.cache_key) if self.cache_key is not None else None
        if hit is None:
            return None
        self.log.info("%s: cached result used", self.title)
        return super().completed(hit.value, {"cached": True})

    def completed(self, result: Any, payload: Mapping[str, Any] | None = None) -> FinalState:
        if self.cache_key is not None:
            self.runtime.get_cache().put(self.cache_key, result, self.target.cache_expiration)
        return super().completed(result, payload)


def new_task_run_info(task: Task[..., Any], flow_ctx: FlowRunContext | None) -> TaskRunInfo:
    run_id = uuid4()
    return TaskRunInfo(
        id=run_id,
        name=f"{task.name}-{run_id.hex[:8]}",
        task_name=task.name,
        flow_run=flow_ctx.info if flow_ctx is not None else None,
        tags=list(task.tags),
    )


def run_task(
    task: Task[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    future: TaskFuture[Any] | None = None,
) -> Any:
    """Run a sync task's body through its states (note 1); its result or its exception."""
    run = _TaskRun(task, future)
    try:
        args, kwargs = resolve(args), resolve(kwargs)
    except Exception as exc:
        run.call_hooks(run.upstream_failed(exc))
        raise
    except BaseException as exc:
        run.interrupted(exc)
        raise
    hit = run.cached(args, kwargs)
    if hit is not None:
        run.call_hooks(hit)
        return hit.result
    return attempts(run, lambda: task.fn(*args, **kwargs))


async def run_task_async(
    task: Task[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    future: TaskFuture[Any] | None = None,
) -> Any:
    """``run_task`` for an async task."""
    run = _TaskRun(task, future)
    try:
        args, kwargs = await resolve_async(args), await resolve_async(kwargs)
    except Exception as exc:
        await run.acall_hooks(run.upstream_failed(exc))
        raise
    except BaseException as exc:
        run.interrupted(exc)
        raise
    hit = run.cached(args, kwargs)
    if hit is not None:
        await run.acall_hooks(hit)
        return hit.result
    return await attempts_async(run, lambda: task.fn(*args, **kwargs))


def _run_into(future: TaskFuture[Any], body: Callable[[], Any]) -> None:
    if not future.future.set_running_or_notify_cancel():
        return  # cancelled before it started
    try:
        result = body()
    except BaseException as exc:
        future.future.set_exception(exc)
    else:
        future.future.set_result(result)


def _copy_outcome(task: asyncio.Task[Any], future: TaskFuture[Any]) -> None:
    if task.cancelled():
        future.future.set_exception(
            concurrent.futures.CancelledError(f"task run {future.task_run.name} cancelled")
        )
    elif (exc := task.exception()) is not None:
        future.future.set_exception(exc)
    else:
        future.future.set_result(task.result())


def submit_task(task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> TaskFuture[Any]:
    """Report Pending now; start the task run once its future arguments are done (note 2)."""
    flow_ctx = current_flow_run()
    if flow_ctx is None:
        raise RuntimeError(
            f"{task.name}.submit() needs a running flow: call {task.name}(...) directly, or submit it "
            "from inside a @flow function"
        )
    loop = flow_ctx.loop if task.is_async else None
    info = new_task_run_info(task, flow_ctx)
    future: TaskFuture[Any] = TaskFuture(info, loop=loop)
    try:
        flow_ctx.reporter.task_run(info, State.PENDING, None, None, None)
    except Exception:
        logging.getLogger(__name__).exception("task run %r: could not report Pending", info.name)
    flow_ctx.track(future)
    context = contextvars.copy_context()

    def start_on_loop(flow_loop: asyncio.AbstractEventLoop) -> None:
        if future.future.set_running_or_notify_cancel():
            aio = flow_loop.create_task(run_task_async(task, args, kwargs, future=future), context=context)
            future.asyncio_task = aio
            aio.add_done_callback(lambda t: _copy_outcome(t, future))

    def start() -> None:
        if future.future.cancelled():
            return
        if loop is not None:
            try:
                loop.call_soon_threadsafe(start_on_loop, loop)
            except RuntimeError:  # the flow's loop is closed: the flow run ended
                if future.future.cancel():
                    future.set_state(State.CANCELLED)
            return
        if task.is_async:
            body: Callable[[], Any] = lambda: asyncio.run(run_task_async(task, args, kwargs, future=future))  # noqa: E731
        else:
            body = lambda: run_task(task, args, kwargs, future=future)  # noqa: E731
        try:
            flow_ctx.executor().submit(context.run, _run_into, future, body)
        except RuntimeError as exc:  # the flow run's pool is shut down: it ended
            if future.future.cancel():
                future.set_state(State.CANCELLED)
                logging.getLogger(__name__).warning("task run %r not started: %s", info.name, exc)

    when_done(collect_futures([args, kwargs]), start)
    return future
