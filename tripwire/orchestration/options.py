"""The options flows and tasks share (retries, delays, timeout, log_prints, hooks, tags), checked once.

Checked when the flow or task is defined, so a typo fails at import time with ``ValidationFailed``
naming the option, not in the middle of a run. How the engine uses them: ``engine.py`` notes 2, 7, 8.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

from tripwire.errors import ValidationFailed

__all__ = ["Hooks", "RunOptions"]

Hook = Callable[[Any, Any, Any], Any]
Hooks = Hook | Sequence[Hook] | None


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _hooks(value: Hooks, option: str) -> tuple[Hook, ...]:
    hooks = () if value is None else (value,) if callable(value) else tuple(value)
    for i, hook in enumerate(hooks):
        if not callable(hook):
            raise ValidationFailed([(f"{option}[{i}]", f"must be callable, got {type(hook).__name__}")])
    return hooks


class RunOptions:
    """Options of a flow or a task; raises ValidationFailed naming the option that is wrong."""

    def __init__(
        self,
        *,
        retries: int = 0,
        retry_delay_seconds: float | Sequence[float] = 0,
        retry_jitter_factor: float | None = None,
        timeout_seconds: float | None = None,
        log_prints: bool | None = None,
        on_completion: Hooks = None,
        on_failure: Hooks = None,
        tags: Sequence[str] = (),
    ) -> None:
        errors: list[tuple[str, str]] = []
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            errors.append(("retries", f"must be an integer >= 0, got {retries!r}"))
        delays = retry_delay_seconds
        if isinstance(delays, str) or not (_number(delays) or isinstance(delays, Sequence)):
            errors.append(("retry_delay_seconds", f"must be a number or a list of numbers, got {delays!r}"))
        elif isinstance(delays, Sequence):
            if not delays:
                errors.append(("retry_delay_seconds", "an empty list; give at least one delay"))
            for i, d in enumerate(delays):
                if not _number(d) or d < 0:
                    errors.append((f"retry_delay_seconds[{i}]", f"must be a number >= 0, got {d!r}"))
            delays = [float(d) for d in delays if _number(d)]
        elif delays < 0:
            errors.append(("retry_delay_seconds", f"must be >= 0, got {delays!r}"))
        if retry_jitter_factor is not None and (not _number(retry_jitter_factor) or retry_jitter_factor < 0):
            errors.append(("retry_jitter_factor", f"must be a number >= 0, got {retry_jitter_factor!r}"))
        if timeout_seconds is not None and (not _number(timeout_seconds) or timeout_seconds <= 0):
            errors.append(("timeout_seconds", f"must be a number > 0, got {timeout_seconds!r}"))
        if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
            errors.append(("tags", f"must be a list of non-empty strings, got {tags!r}"))
        if errors:
            raise ValidationFailed(errors)
        self.retries = retries
        self.retry_delay_seconds: float | list[float] = delays if isinstance(delays, list) else float(delays)
        self.retry_jitter_factor = retry_jitter_factor
        self.timeout_seconds = None if timeout_seconds is None else float(timeout_seconds)
        self.log_prints = log_prints
        self.on_completion = _hooks(on_completion, "on_completion")
        self.on_failure = _hooks(on_failure, "on_failure")
        self.tags = list(dict.fromkeys(tags))
