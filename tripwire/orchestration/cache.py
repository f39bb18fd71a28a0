"""Result cache of task runs: one file per cache key under ``<home>/results/``.

1. A task with ``cache_key_fn`` asks for its key before running: ``cache_key_fn(context, arguments)``
   (``context``: the ``TaskRunContext``; ``arguments``: the call's arguments by parameter name) returns
   a string, or None for "do not cache this call". A key found and not expired is a hit: the task run
   completes with the stored result and its body does not run.
2. ``task_input_hash`` is the usual key function: SHA-256 of the task's key (``module.qualname``) and a
   canonical encoding of its arguments, the same in every process (never ``hash()``, which is salted
   per process). Canonical: JSON with sorted keys for JSON-like values; sets sorted by their encoding;
   bytes, datetimes, UUIDs, paths, enums and decimals by a tagged text; pydantic models and dataclasses
   by their fields; anything else by its pickle (stable for plain objects; a set of strings inside such
   an object is not, which only costs a cache miss). An argument that cannot be encoded at all makes the
   key None: the call runs uncached.
3. An entry is a pickle of ``(expires_at, result)``, ``expires_at`` in epoch seconds of the cache's clock
   or None for "never". It is written to a temporary file in the same directory and renamed over the
   entry: a reader never sees half a file, and two processes writing one key leave one whole entry.
4. A read finds nothing when the file is missing, unreadable (logged) or expired (then removed). A result
   that cannot be pickled is not cached (logged); the task run still completes.
5. The file name is the SHA-256 of the key, so any key string is a safe name.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Any
from uuid import UUID

from pydantic import BaseModel

__all__ = ["CacheHit", "ResultCache", "expiration_seconds", "task_input_hash"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheHit:
    """A cached result (a hit may hold None)."""

    value: Any


def expiration_seconds(expiration: timedelta | float | None) -> float | None:
    """``cache_expiration`` in seconds (None: never expires); refuses negative values."""
    if expiration is None:
        return None
    seconds = expiration.total_seconds() if isinstance(expiration, timedelta) else float(expiration)
    if seconds < 0:
        raise ValueError(f"cache_expiration must be >= 0, got {expiration!r}")
    return seconds


class ResultCache:
    """Task results by cache key in ``directory`` (note 3-5); ``clock`` returns epoch seconds."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self._clock = clock

    @classmethod
    def under(cls, home: Path, *, clock: Callable[[], float] = time.time) -> ResultCache:
        """The cache of a Tripwire home: ``<home>/results``."""
        return cls(Path(home) / "results", clock=clock)

    def _path(self, key: str) -> Path:
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()}.pkl"

    def get(self, key: str) -> CacheHit | None:
        """The cached result of ``key``, or None when missing, unreadable or expired."""
        path = self._path(key)
        try:
            with path.open("rb") as f:
                expires_at, value = pickle.load(f)
        except FileNotFoundError:
            return None
        except Exception as exc:  # a truncated or foreign file, a class that no longer exists
            log.warning("cache entry %s unreadable (%s: %s); running the task", path, type(exc).__name__, exc)
            return None
        if expires_at is not None and self._clock() >= expires_at:
            path.unlink(missing_ok=True)
            return None
        return CacheHit(value)

    def put(self, key: str, value: Any, expiration: timedelta | float | None = None) -> bool:
        """Store ``value`` under ``key`` for ``expiration`` (None: forever); False when not picklable."""
        seconds = expiration_seconds(expiration)
        expires_at = None if seconds is None else self._clock() + seconds
        try:
            data = pickle.dumps((expires_at, value), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            log.warning("result of cache key %s not cached: %s: %s", key[:80], type(exc).__name__, exc)
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".pkl")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True


def _canonical(value: Any) -> Any:
    """A JSON-encodable, process-independent form of ``value`` (note 2)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return (
            value if value == value and value not in (float("inf"), float("-inf")) else ["float", repr(value)]
        )
    if isinstance(value, enum.Enum):
        return ["enum", f"{type(value).__qualname__}.{value.name}", _canonical(value.value)]
    if isinstance(value, list | tuple):
        return [type(value).__name__, [_canonical(v) for v in value]]
    if isinstance(value, Mapping):
        items = sorted(([_key(k), _canonical(v)] for k, v in value.items()), key=lambda kv: kv[0])
        return ["map", items]
    if isinstance(value, set | frozenset):
        return ["set", sorted(_dumps(_canonical(v)) for v in value)]
    if isinstance(value, bytes | bytearray):
        return ["bytes", bytes(value).hex()]
    if isinstance(value, datetime | date | dtime):
        return [type(value).__name__, value.isoformat()]
    if isinstance(value, timedelta):
        return ["timedelta", value.total_seconds()]
    if isinstance(value, UUID | Decimal | PurePath):
        return [type(value).__name__, str(value)]
    if isinstance(value, BaseModel):
        return ["model", type(value).__qualname__, _canonical(value.model_dump())]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return ["dataclass", type(value).__qualname__, _canonical(fields)]
    return ["pickle", hashlib.sha256(pickle.dumps(value, protocol=4)).hexdigest()]


def _key(key: Any) -> str:
    return key if isinstance(key, str) else _dumps(_canonical(key))


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def task_input_hash(context: Any, arguments: Mapping[str, Any]) -> str | None:
    """The default cache key: the task's key and its arguments, hashed (note 2); None when unhashable."""
    try:
        encoded = _dumps(["v1", context.task.key, _canonical(dict(arguments))])
    except Exception as exc:
        log.info("task %s not cached: its arguments cannot be hashed (%s)", context.task.name, exc)
        return None
    return hashlib.sha256(encoded.encode()).hexdigest()
