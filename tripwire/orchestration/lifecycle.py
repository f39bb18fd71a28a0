"""One run through its states: the machine shared by flow runs and task runs.

``engine.py`` lists the exact state sequences; this module implements notes 2, 4, 5, 7 and 8 there.

1. ``attempts`` / ``attempts_async``: report Running, run the body (with its timeout and its context
   variables), then report Completed, or Scheduled and sleep before the next attempt, or Failed when
   no retry is left; an interruption (not an ``Exception``) is reported as Crashed or Cancelled and
   propagates. The sleep is the runtime's (``context.Runtime``), so tests never wait.
2. ``RunMachine`` holds what varies: how a state is reported (flow runs may be aborted by their
   reporter, task runs never), which context variables the body sees, and what to wait for after an
   attempt (a flow run's submitted task runs).
3. A sync body with a timeout runs in a daemon thread with a copy of the caller's context; when time
   is up the engine stops waiting and raises ``RunTimedOut``. The thread cannot be killed and runs on.
   An async body runs under ``asyncio.timeout`` and is cancelled.
4. Hooks run after the final state is reported, in order; each one's exception is logged, never raised.
   An async hook of a sync run is run to completion on a fresh loop (``asyncio.run``) when the thread
   has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tripwire.errors import ValidationFailed
from tripwire.orchestration.context import Runtime
from tripwire.orchestration.reporting import RunReporter
from tripwire.orchestration.states import State

__all__ = [
    "FinalState",
    "RunMachine",
    "RunTimedOut",
    "attempts",
    "attempts_async",
    "error_text",
    "retry_delay",
]

MESSAGE_MAX_CHARS = 1000


class RunTimedOut(TimeoutError):
    """A run's attempt took longer than its ``timeout_seconds`` (note 3)."""

    def __init__(self, message: str, run_id: object) -> None:
        super().__init__(message)
        self.run_id = run_id


@dataclass(frozen=True)
class FinalState:
    """How a run ended, as hooks receive it."""

    type: State
    message: str | None = None
    result: Any = None
    error: BaseException | None = None


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MESSAGE_MAX_CHARS]


def retry_delay(target: Any, retry: int, runtime: Runtime) -> float:
    """Seconds to wait before retry number ``retry`` (from 1) of ``target`` (``engine`` note 2)."""
    delays = target.retry_delay_seconds
    if isinstance(delays, list | tuple):
        base = float(delays[min(retry, len(delays)) - 1]) if delays else 0.0
    else:
        base = float(delays)
    jitter = target.retry_jitter_factor
    if jitter:
        base *= runtime.rng.uniform(max(0.0, 1.0 - jitter), 1.0 + jitter)
    return base


class RunMachine:
    """One flow run or task run: its state, retries, hooks (subclasses say how to report)."""

    kind = "run"

    def __init__(self, target: Any, info: Any, reporter: RunReporter, runtime: Runtime) -> None:
        self.target = target
        self.info = info
        self.reporter = reporter
        self.runtime = runtime
        self.state: State | None = None
        self.attempts = 0
        self.log: logging.LoggerAdapter = logging.LoggerAdapter(logging.getLogger(__name__))

    @property
    def title(self) -> str:
        return f"{self.kind} {self.info.name!r}"

    def report(
        self, state: State, message: str | None = None, payload: Mapping[str, Any] | None = None
    ) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """The context variables of the body (run context, print target)."""
        yield

    def settle(self, exc: BaseException | None) -> None:
        """After an attempt of a sync body: wait for (or cancel) what it started."""

    async def settle_async(self, exc: BaseException | None) -> None:
        """After an attempt of an async body."""

    def timed_out(self, exc: BaseException | None) -> bool:
        return isinstance(exc, RunTimedOut) and exc.run_id == self.info.id

    def next_retry(self, exc: Exception) -> float | None:
        """Report Scheduled and return the delay when a retry is left; None otherwise (``engine`` note 2)."""
        retry = self.attempts
        if retry > self.target.retries:
            return None
        delay = retry_delay(self.target, retry, self.runtime)
        retries = self.target.retries
        message = f"attempt {retry} failed: {error_text(exc)}; retry {retry} of {retries} in {delay:g} s"
        self.log.warning("%s %s", self.title, message)
        self.report(State.SCHEDULED, message[:MESSAGE_MAX_CHARS], {"retry": retry, "retry_in_s": delay})
        return delay

    def completed(self, result: Any, payload: Mapping[str, Any] | None = None) -> FinalState:
        self.report(State.COMPLETED, None, payload)
        return FinalState(State.COMPLETED, result=result)

    def failed(self, exc: BaseException, payload: Mapping[str, Any] | None = None) -> FinalState:
        message = error_text(exc)
        self.log.error("%s failed: %s", self.title, message, exc_info=not isinstance(exc, ValidationFailed))
        self.report(State.FAILED, message, {"error": type(exc).__name__, **(payload or {})})
        return FinalState(State.FAILED, message=message, error=exc)

    def interrupted(self, exc: BaseException) -> None:
        state = State.CANCELLED if isinstance(exc, asyncio.CancelledError) else State.CRASHED
        try:
            self.report(state, error_text(exc) if str(exc) else type(exc).__name__)
        except Exception:
            self.log.exception("%s: could not report %s", self.title, state.value)

    def _hooks(self, final: FinalState) -> tuple[Callable[..., Any], ...]:
        return self.target.on_completion if final.type is State.COMPLETED else self.target.on_failure

    def call_hooks(self, final: FinalState) -> None:
        for hook in self._hooks(final):
            try:
                outcome = hook(self.target, self.info, final)
                if inspect.isawaitable(outcome):
                    _run_awaitable(outcome)
            except Exception:
                self.log.exception("%s: hook %s failed", self.title, getattr(hook, "__qualname__", hook))

    async def acall_hooks(self, final: FinalState) -> None:
        for hook in self._hooks(final):
            try:
                outcome = hook(self.target, self.info, final)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                self.log.exception("%s: hook %s failed", self.title, getattr(hook, "__qualname__", hook))

    def print_logger(self, logger: logging.Logger) -> logging.LoggerAdapter | None:
        return logging.LoggerAdapter(logger, self.log.extra) if self.target.log_prints else None


def _run_awaitable(awaitable: Awaitable[Any]) -> None:
    async def wait() -> None:
        await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(wait())
        return
    if inspect.iscoroutine(awaitable):
        awaitable.close()
    raise RuntimeError("an async hook of a sync run cannot run inside a running event loop")


def _call_with_timeout(call: Callable[[], Any], timeout_s: float | None, run: RunMachine) -> Any:
    """``call()``; with a timeout, in a daemon thread that is abandoned when time is up (note 3)."""
    if timeout_s is None:
        return call()
    box: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()

    def body() -> None:
        try:
            box["result"] = context.run(call)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=body, daemon=True, name=f"tripwire {run.title}").start()
    if not done.wait(timeout_s):
        raise RunTimedOut(f"{run.title} timed out after {timeout_s:g} s", run.info.id)
    if "error" in box:
        raise box["error"]
    return box["result"]


async def _await_with_timeout(awaitable: Awaitable[Any], timeout_s: float | None, run: RunMachine) -> Any:
    if timeout_s is None:
        return await awaitable
    cm = asyncio.timeout(timeout_s)
    try:
        async with cm:
            return await awaitable
    except TimeoutError:
        if cm.expired():
            raise RunTimedOut(f"{run.title} timed out after {timeout_s:g} s", run.info.id) from None
        raise


def attempts(run: RunMachine, call: Callable[[], Any]) -> Any:
    """Running, the body, then Completed / Scheduled (retry) / Failed (note 1)."""
    while True:
        run.attempts += 1
        run.info.run_count += 1
        run.report(State.RUNNING)
        try:
            with run.inside():
                result = _call_with_timeout(call, run.target.timeout_seconds, run)
        except Exception as exc:
            run.settle(exc)
            delay = run.next_retry(exc)
            if delay is None:
                run.call_hooks(run.failed(exc))
                raise
            run.runtime.sleep(delay)
            continue
        except BaseException as exc:
            run.interrupted(exc)
            raise
        run.settle(None)
        final = run.completed(result)
        run.call_hooks(final)
        return result


async def attempts_async(run: RunMachine, call: Callable[[], Awaitable[Any]]) -> Any:
    """``attempts`` for an async body."""
    while True:
        run.attempts += 1
        run.info.run_count += 1
        run.report(State.RUNNING)
        try:
            with run.inside():
                result = await _await_with_timeout(call(), run.target.timeout_seconds, run)
        except Exception as exc:
            await run.settle_async(exc)
            delay = run.next_retry(exc)
            if delay is None:
                await run.acall_hooks(run.failed(exc))
                raise
            await run.runtime.async_sleep(delay)
            continue
        except BaseException as exc:
            run.interrupted(exc)
            raise
        await run.settle_async(None)
        final = run.completed(result)
        await run.acall_hooks(final)
        return result
