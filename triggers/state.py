"""Trigger state: small JSON records addressed by string keys, and the store they live in.

The evaluator keeps one record per (automation, event-trigger path, ``for_each`` key) and one per
(automation, composite path). Each record is a JSON object that never refers to another, so a store
can keep each under its own Redis key. A record may carry a *due* time (µs since the epoch): the
proactive deadline of an armed key or the resolution time of a fired reactive key. A store indexes
due times (a Redis ZSET, or a heap here) so that a tick loads only the records that are due.

Record fields (times are integer microseconds since the epoch, event ids are strings):

- every record: ``gen`` ("<enable time>/<trigger digest>" of its automation; other values are stale),
  ``seen`` (processing number when the key was first seen).
- reactive: ``counted`` [[t, processing, event id], ...] since the last firing; ``newest`` counted
  time; ``last_fire``; ``armed_at`` (with ``after``); ``resolve_at`` (due) while unresolved.
- proactive: ``armed_at``; ``deadline`` (due) while armed; ``recorded`` (the ``threshold`` newest
  events, without ``after``) or ``count`` and ``arming`` (with ``after``).
- top-level event triggers: ``open`` (firings not yet resolved) and ``last_firing`` (firing id).
- composite: ``slots`` — per child, null or [fire time, processing, event id | null, [event ids]].
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Collection, Iterator
from json.encoder import encode_basestring as _json_string  # C speed-up of json.dumps for one str
from typing import Any, Protocol

__all__ = [
    "MemoryStateStore",
    "Record",
    "StateStore",
    "composite_record_key",
    "event_record_key",
    "parse_record_key",
    "record_key_values",
]

Record = dict[str, Any]


def event_record_key(automation_id: str, path: str, values: tuple[str, ...]) -> str:
    """``{<automation id>}/<path>/<JSON list of for_each values>``; braces make a Redis hash tag."""
    return f"{{{automation_id}}}/{path}/[{','.join(map(_json_string, values))}]"


def record_key_values(key: str) -> tuple[str, ...]:
    """The ``for_each`` values of an event-trigger record key."""
    return tuple(json.loads(key.split("/", 2)[2]))


def composite_record_key(automation_id: str, path: str) -> str:
    """``{<automation id>}/<path>``."""
    return f"{{{automation_id}}}/{path}"


def parse_record_key(key: str) -> tuple[str, str]:
    """(automation id, trigger path) of a record key."""
    end = key.index("}")
    path, _, _ = key[end + 2 :].partition("/")
    return key[1:end], path


class StateStore(Protocol):
    """Where the evaluator reads and writes its records (synchronously: load a batch's records first)."""

    def get_many(self, keys: Collection[str]) -> dict[str, Record]:
        """The records that exist among ``keys``."""
        ...

    def put(self, key: str, record: Record, due_us: int | None = None) -> None:
        """Store a record and its due time (None: not due)."""
        ...

    def delete(self, key: str) -> None:
        """Forget a record and its due time."""
        ...

    def due(self, until_us: int) -> list[tuple[int, str]]:
        """(due time, key) of every record due at or before ``until_us``, earliest first."""
        ...


class MemoryStateStore:
    """The in-memory store; also usable as the write-back overlay of a remote store (``track=True``)."""

    def __init__(self, *, track: bool = False) -> None:
        self._records: dict[str, Record] = {}
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._track = track
        self._changed: dict[str, tuple[Record | None, int | None]] = {}

    def get_many(self, keys: Collection[str]) -> dict[str, Record]:
        records = self._records
        return {k: records[k] for k in keys if k in records}

    def get(self, key: str) -> Record | None:
        """One record, or None."""
        return self._records.get(key)

    def put(self, key: str, record: Record, due_us: int | None = None) -> None:
        self._records[key] = record
        if due_us is None:
            self._due.pop(key, None)
        elif self._due.get(key) != due_us:
            self._due[key] = due_us
            heapq.heappush(self._heap, (due_us, key))
        if self._track:
            self._changed[key] = (record, due_us)

    def delete(self, key: str) -> None:
        self._records.pop(key, None)
        self._due.pop(key, None)
        if self._track:
            self._changed[key] = (None, None)

    def due(self, until_us: int) -> list[tuple[int, str]]:
        heap, current = self._heap, self._due
        found: dict[str, int] = {}
        while heap and heap[0][0] <= until_us:
            at, key = heapq.heappop(heap)
            if current.get(key) == at:
                found[key] = at
        for key, at in found.items():
            heapq.heappush(heap, (at, key))  # still due until the evaluator changes the record
        return sorted((at, key) for key, at in found.items())

    def load(self, records: dict[str, tuple[Record, int | None]]) -> None:
        """Add records fetched from elsewhere, without marking them changed."""
        track, self._track = self._track, False
        try:
            for key, (record, due_us) in records.items():
                self.put(key, record, due_us)
        finally:
            self._track = track

    def drain_changes(self) -> dict[str, tuple[Record | None, int | None]]:
        """Records written since the last drain: key -> (record or None when deleted, due time)."""
        changed, self._changed = self._changed, {}
        return changed

    def due_of(self, key: str) -> int | None:
        """The due time of a record, if any."""
        return self._due.get(key)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._records))
