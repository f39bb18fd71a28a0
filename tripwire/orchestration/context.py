"""Run contexts, the runtime the engine uses, and ``log_prints``.

1. ``FlowRunContext`` / ``TaskRunContext`` live in context variables while a flow run / task run body
   runs: a task called or submitted inside a flow finds its flow run there (its events get the flow
   run, flow, deployment, work pool and tags as related resources). Task bodies submitted to the thread
   pool run in a copy of the submitter's context; async tasks are asyncio tasks, which copy it too.
2. A flow run context owns the thread pool of its sync task runs (created on the first ``submit``) and
   tracks every future it handed out, so the engine can wait for them (or cancel those not started)
   before it reports the flow run's final state.
3. ``Runtime`` is what the engine needs from outside: the reporter, the result cache, how to sleep
   between retries and a random source for jitter. By default: the event-only reporter on the
   process-wide sink and the cache under ``Settings().home``, both built on first use. ``use_runtime``
   replaces parts of it for the code inside a ``with`` block (tests inject a recording reporter, a
   sleep that only records, a cache with a fake clock).
4. ``log_prints``: ``builtins.print`` is wrapped once, the first time a run asks for it. The wrapper
   prints as usual and, when the context variable names a logger (a run with ``log_prints`` is running
   in this context), logs the printed text at INFO on it as well: ``tripwire.flow_runs`` for a flow,
   ``tripwire.task_runs`` for a task, with the run's id and name in ``extra``. Context variables make it
   per thread and per asyncio task, so concurrent runs never see each other's setting. Prints to a file
   other than stdout are left alone.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import logging
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tripwire.orchestration.cache import ResultCache
from tripwire.orchestration.reporting import FlowRunInfo, RunReporter, TaskRunInfo

if TYPE_CHECKING:
    from tripwire.orchestration.flows import Flow
    from tripwire.orchestration.futures import TaskFuture
    from tripwire.orchestration.tasks import Task

__all__ = [
    "FlowRunContext",
    "Runtime",
    "TaskRunContext",
    "current_flow_run",
    "current_runtime",
    "current_task_run",
    "printing_to",
    "use_runtime",
]

flow_run_logger = logging.getLogger("tripwire.flow_runs")
task_run_logger = logging.getLogger("tripwire.task_runs")


@dataclass(frozen=True)
class Runtime:
    """What the engine takes from outside (note 3); None fields fall back to the process defaults."""

    reporter: RunReporter | None = None
    cache: ResultCache | None = None
    sleep: Callable[[float], None] = time.sleep
    async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def get_reporter(self) -> RunReporter:
        return self.reporter if self.reporter is not None else _defaults()[0]

    def get_cache(self) -> ResultCache:
        return self.cache if self.cache is not None else _defaults()[1]


_runtime: ContextVar[Runtime | None] = ContextVar("tripwire_runtime", default=None)
_flow_run: ContextVar[FlowRunContext | None] = ContextVar("tripwire_flow_run", default=None)
_task_run: ContextVar[TaskRunContext | None] = ContextVar("tripwire_task_run", default=None)
_print_to: ContextVar[logging.LoggerAdapter | None] = ContextVar("tripwire_print_to", default=None)

_defaults_lock = threading.Lock()
_default_parts: tuple[RunReporter, ResultCache] | None = None


def _defaults() -> tuple[RunReporter, ResultCache]:
    global _default_parts
    with _defaults_lock:
        if _default_parts is None:
            from tripwire.orchestration.sink import EventReporter, default_sink
            from tripwire.settings import Settings

            _default_parts = (EventReporter(default_sink()), ResultCache.under(Settings().home))
        return _default_parts


_PLAIN = Runtime()


def current_runtime() -> Runtime:
    return _runtime.get() or _PLAIN


@contextlib.contextmanager
def use_runtime(**parts: Any) -> Iterator[Runtime]:
    """Run the block with parts of the runtime replaced (``reporter=``, ``cache=``, ``sleep=``...)."""
    runtime = replace(current_runtime(), **parts)
    token = _runtime.set(runtime)
    try:
        yield runtime
    finally:
        _runtime.reset(token)


@dataclass
class FlowRunContext:
    """The flow run being executed in this context (notes 1, 2)."""

    flow: Flow[..., Any]
    info: FlowRunInfo
    reporter: RunReporter
    runtime: Runtime
    loop: asyncio.AbstractEventLoop | None = None  # the loop of an async flow run
    futures: list[TaskFuture[Any]] = field(default_factory=list)
    _executor: concurrent.futures.ThreadPoolExecutor | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    thread_name_prefix=f"tripwire-{self.info.name}"
                )
            return self._executor

    def track(self, future: TaskFuture[Any]) -> None:
        with self._lock:
            self.futures.append(future)

    def outstanding(self) -> list[TaskFuture[Any]]:
        with self._lock:
            return [f for f in self.futures if not f.done()]

    def close(self, *, wait: bool) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=not wait)


@dataclass
class TaskRunContext:
    """The task run being executed in this context; ``cache_key_fn`` receives it."""

    task: Task[..., Any]
    info: TaskRunInfo
    flow_run: FlowRunContext | None


def current_flow_run() -> FlowRunContext | None:
    return _flow_run.get()


def current_task_run() -> TaskRunContext | None:
    return _task_run.get()


@contextlib.contextmanager
def entered(flow_run: FlowRunContext | None, task_run: TaskRunContext | None = None) -> Iterator[None]:
    """Set the run context variables for the block (the engine's ``with`` around a body)."""
    flow_token = _flow_run.set(flow_run)
    task_token = _task_run.set(task_run)
    try:
        yield
    finally:
        _task_run.reset(task_token)
        _flow_run.reset(flow_token)


# --- log_prints (note 4) ------------------------------------------------------------------------------

_original_print = builtins.print
_install_lock = threading.Lock()


def _print(*values: object, sep: str | None = " ", end: str | None = "\n", file: Any = None,
           flush: bool = False) -> None:  # fmt: skip
    _original_print(*values, sep=sep, end=end, file=file, flush=flush)
    target = _print_to.get()
    if target is not None and (file is None or file is sys.stdout):
        target.info("%s", (" " if sep is None else sep).join(str(v) for v in values))


def _install() -> None:
    with _install_lock:
        if builtins.print is not _print:
            builtins.print = _print


def print_target() -> logging.LoggerAdapter | None:
    return _print_to.get()


@contextlib.contextmanager
def printing_to(target: logging.LoggerAdapter | None) -> Iterator[None]:
    """While the block runs in this context, ``print`` also logs to ``target`` (None: it does not)."""
    if target is not None:
        _install()
    token = _print_to.set(target)
    try:
        yield
    finally:
        _print_to.reset(token)
