"""Task futures: what ``Task.submit`` and ``Task.map`` return, and passing them to other tasks.

1. A ``TaskFuture`` wraps a ``concurrent.futures.Future`` set by the engine when the task run ends (with
   its result or its exception, or cancelled when the flow run ended before it started). ``result()``
   blocks; ``await future`` works in async code (both for thread-pool and asyncio task runs); ``state``
   is the task run's latest state, final once the future is done.
2. A future of an async task that runs on the flow's event loop cannot be waited for with ``result()``
   from that loop's own thread (the loop would stop and never finish it): that raises a clear
   RuntimeError saying to ``await`` it instead.
3. Futures passed as arguments (directly, or inside a list, tuple, set or dict) are resolved to their
   results before the receiving task run starts. A submitted task run is only started once all of
   them are done (``when_done``), so a task waiting for its inputs never holds a pool thread.
4. ``map`` calls the task once per item: every argument is iterated in step (all must have the same
   length) except those wrapped in ``unmapped(...)`` and strings/bytes, which are passed whole to every
   call. A future given as an iterable is resolved first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Any, Generic, TypeVar

from tripwire.orchestration.reporting import TaskRunInfo
from tripwire.orchestration.states import State

__all__ = ["TaskFuture", "collect_futures", "expand_map", "resolve", "resolve_async", "unmapped", "when_done"]

R = TypeVar("R")


class TaskFuture(Generic[R]):
    """The pending result of a submitted task run (note 1)."""

    def __init__(self, task_run: TaskRunInfo, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.task_run = task_run
        self.future: concurrent.futures.Future[R] = concurrent.futures.Future()
        self.loop = loop  # the flow's loop, when the task runs as an asyncio task on it
        self.asyncio_task: asyncio.Task[Any] | None = None
        self._state = State.PENDING

    @property
    def state(self) -> State:
        """The task run's latest state."""
        return self._state

    def set_state(self, state: State) -> None:
        self._state = state

    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None) -> R:
        """The task run's result; raises its exception, or TimeoutError after ``timeout`` seconds."""
        if not self.future.done() and self.loop is not None and _running_loop() is self.loop:
            raise RuntimeError(
                f"task run {self.task_run.name!r} runs on this event loop: use `await future`, not "
                "future.result(), inside an async flow"
            )
        return self.future.result(timeout)

    def wait(self, timeout: float | None = None) -> State | None:
        """Wait for the end of the task run without raising; its final state, or None after ``timeout``."""
        if not self.future.done() and self.loop is not None and _running_loop() is self.loop:
            raise RuntimeError(f"task run {self.task_run.name!r} runs on this event loop: await it instead")
        done, _ = concurrent.futures.wait([self.future], timeout)
        return self._state if done else None

    def __await__(self) -> Generator[Any, None, R]:
        return asyncio.wrap_future(self.future).__await__()

    def __repr__(self) -> str:
        return f"TaskFuture({self.task_run.name!r}, state={self._state.value})"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class unmapped(Generic[R]):
    """Wrap an argument of ``Task.map`` that every call receives whole (note 4)."""

    def __init__(self, value: R) -> None:
        self.value = value


def _walk(value: Any, leaf: Callable[[TaskFuture[Any]], Any]) -> Any:
    if isinstance(value, TaskFuture):
        return leaf(value)
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(_walk(v, leaf) for v in value)
    if type(value) is dict:
        return {k: _walk(v, leaf) for k, v in value.items()}
    return value


def collect_futures(args: Iterable[Any]) -> list[TaskFuture[Any]]:
    """Every future found in ``args`` (note 3)."""
    found: list[TaskFuture[Any]] = []
    for arg in args:
        _walk(arg, found.append)
    return found


def resolve(value: Any) -> Any:
    """``value`` with each future replaced by its result (blocking); an upstream exception propagates."""
    return _walk(value, lambda f: f.result())


async def resolve_async(value: Any) -> Any:
    """``value`` with each future replaced by its awaited result."""
    futures = collect_futures([value])
    if not futures:
        return value
    results = {id(f): await f for f in futures}
    return _walk(value, lambda f: results[id(f)])


def when_done(futures: list[TaskFuture[Any]], callback: Callable[[], None]) -> None:
    """Call ``callback`` once every future is done (at once when they already are)."""
    pending = [f for f in futures if not f.done()]
    if not pending:
        callback()
        return
    lock = threading.Lock()
    left = [len(pending)]

    def one_done(_: object) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            callback()

    for f in pending:
        f.future.add_done_callback(one_done)


def _is_constant(value: Any) -> bool:
    return isinstance(value, unmapped | str | bytes)


def expand_map(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The (args, kwargs) of each call of ``Task.map`` (note 4)."""
    named: list[tuple[str | int, Any]] = [*enumerate(args), *kwargs.items()]
    columns: dict[str | int, list[Any]] = {}
    for where, value in named:
        if _is_constant(value):
            continue
        if isinstance(value, TaskFuture):
            value = value.result()
        try:
            columns[where] = list(value)
        except TypeError:
            what = f"argument {where}" if isinstance(where, int) else f"argument {where!r}"
            raise TypeError(
                f"map() iterates over every argument: {what} is a {type(value).__name__}, not iterable; "
                "wrap it in unmapped(...) to pass it whole to each call"
            ) from None
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in columns.items())
        raise ValueError(f"map() needs iterables of one length, got {sizes}")
    count = lengths.pop() if lengths else 0

    def value_at(where: str | int, value: Any, i: int) -> Any:
        if where in columns:
            return columns[where][i]
        return value.value if isinstance(value, unmapped) else value

    calls = []
    for i in range(count):
        call_args = tuple(value_at(n, v, i) for n, v in enumerate(args))
        call_kwargs = {k: value_at(k, v, i) for k, v in kwargs.items()}
        calls.append((call_args, call_kwargs))
    return calls
