"""``@task``: a function run as a task run inside a flow (or alone), with retries, caching and futures.

    @task(retries=3, retry_delay_seconds=[1, 10, 60], cache_key_fn=task_input_hash,
          cache_expiration=timedelta(hours=1))
    def fetch(url: str) -> bytes: ...

    @flow
    def crawl(urls: list[str]) -> int:
        pages = fetch.map(urls)                      # one task run per url, in the flow's thread pool
        return sum(len(p.result()) for p in pages)

1. Calling a task runs it now, in the caller's thread, and returns its result (an async task returns a
   coroutine). Inside a flow its events carry the flow run as related resource; outside a flow it runs
   the same way with no flow run related.
2. ``submit`` returns a ``TaskFuture`` at once. A sync task runs in the flow run's thread pool; an async
   task runs as an asyncio task on the flow's loop (async flow) or on its own loop in a pool thread (sync
   flow). Futures passed as arguments are resolved first (``futures.py`` note 3). ``submit`` and
   ``map`` need a running flow.
3. ``map`` submits one task run per item (``futures.py`` note 4) and returns their futures in order.
4. ``key`` (``module.qualname``; for a script, the file's stem instead of ``__main__``) identifies the
   task in cache keys (``cache.task_input_hash``), the same in every process that loads the file.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, overload

from tripwire.errors import ValidationFailed
from tripwire.orchestration import task_runs
from tripwire.orchestration.cache import expiration_seconds
from tripwire.orchestration.futures import TaskFuture, expand_map
from tripwire.orchestration.options import Hooks, RunOptions

__all__ = ["Task", "task"]

P = ParamSpec("P")
R = TypeVar("R")

CacheKeyFn = Callable[[Any, dict[str, Any]], str | None]


class Task(RunOptions, Generic[P, R]):
    """A function run as a task run; see the module docstring."""

    def __init__(self, fn: Callable[P, R], *, name: str | None = None, description: str | None = None,
                 cache_key_fn: CacheKeyFn | None = None, cache_expiration: timedelta | float | None = None,
                 **options: Any) -> None:  # fmt: skip
        if not callable(fn):
            raise TypeError(f"@task decorates a function, got {type(fn).__name__}")
        if cache_key_fn is not None and not callable(cache_key_fn):
            raise ValidationFailed([("cache_key_fn", f"must be callable, got {type(cache_key_fn).__name__}")])
        try:
            expiration_seconds(cache_expiration)
        except (TypeError, ValueError) as exc:
            raise ValidationFailed(
                [("cache_expiration", f"must be a timedelta or seconds >= 0 ({exc})")]
            ) from None
        self.fn = fn
        self.name = name or fn.__name__
        self.description = description if description is not None else inspect.getdoc(fn)
        self.cache_key_fn = cache_key_fn
        self.cache_expiration = cache_expiration
        self.is_async = inspect.iscoroutinefunction(fn)
        self._options = options
        super().__init__(**options)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @functools.cached_property
    def key(self) -> str:
        """What identifies this task in cache keys (note 4)."""
        module = self.fn.__module__
        if module == "__main__":
            try:
                module = Path(inspect.getsourcefile(self.fn) or "__main__").stem
            except TypeError:
                pass
        return f"{module}.{self.fn.__qualname__}"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task now (note 1)."""
        if self.is_async:
            return task_runs.run_task_async(self, args, kwargs)  # type: ignore[return-value]
        return task_runs.run_task(self, args, kwargs)  # type: ignore[no-any-return]

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskFuture[R]:
        """Start a task run in the background of the running flow; its future (note 2)."""
        return task_runs.submit_task(self, args, kwargs)

    def map(self, *args: Any, **kwargs: Any) -> list[TaskFuture[R]]:
        """One task run per item of the iterable arguments; their futures in order (note 3)."""
        return [self.submit(*a, **kw) for a, kw in expand_map(args, kwargs)]

    def with_options(self, **changes: Any) -> Task[P, R]:
        """A copy of this task with some options changed."""
        current = {
            "name": self.name,
            "description": self.description,
            "cache_key_fn": self.cache_key_fn,
            "cache_expiration": self.cache_expiration,
            **self._options,
        }
        return Task(self.fn, **{**current, **changes})

    def __repr__(self) -> str:
        return f"Task({self.name!r})"


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = ...,
    description: str | None = ...,
    retries: int = ...,
    retry_delay_seconds: float | Sequence[float] = ...,
    retry_jitter_factor: float | None = ...,
    timeout_seconds: float | None = ...,
    cache_key_fn: CacheKeyFn | None = ...,
    cache_expiration: timedelta | float | None = ...,
    log_prints: bool | None = ...,
    on_completion: Hooks = ...,
    on_failure: Hooks = ...,
    tags: Sequence[str] = ...,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function a task: ``@task`` or ``@task(retries=..., cache_key_fn=..., ...)``."""
    if fn is None:
        return lambda f: Task(f, **options)
    return Task(fn, **options)
