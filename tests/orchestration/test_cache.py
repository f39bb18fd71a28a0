"""Result caching: input hashes stable across processes, the file cache, expiry, cached task runs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from uuid import UUID

import pytest

from tests.orchestration.flow_support import T0, harness_fixture  # noqa: F401
from tripwire.orchestration.cache import ResultCache, task_input_hash
from tripwire.orchestration.flows import flow
from tripwire.orchestration.tasks import task


@dataclass
class Point:
    x: int
    y: int


def ctx(key: str = "pkg.mod.load") -> SimpleNamespace:
    return SimpleNamespace(task=SimpleNamespace(key=key, name=key.rsplit(".", 1)[-1]))


ARGS = {
    "rows": [1, 2.5, "x", None, True],
    "options": {"b": 1, "a": {"nested": (1, 2)}},
    "names": {"zeta", "alpha", "mid"},
    "when": datetime(2026, 11, 21, tzinfo=UTC),
    "id": UUID(int=5),
    "path": Path("/data/in.csv"),
    "point": Point(1, 2),
    "blob": b"\x00\x01",
}

HASH_IN_A_CHILD = """
import json, sys
from types import SimpleNamespace
from tests.orchestration.test_cache import ARGS, ctx
from tripwire.orchestration.cache import task_input_hash
print(task_input_hash(ctx(), ARGS))
"""


def test_input_hash_is_the_same_in_another_process() -> None:
    mine = task_input_hash(ctx(), ARGS)
    child = subprocess.run(
        [sys.executable, "-c", HASH_IN_A_CHILD],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=Path(__file__).parents[2],
    )
    assert child.stdout.strip() == mine


def test_input_hash_depends_on_the_task_and_each_argument_not_on_dict_order() -> None:
    base = task_input_hash(ctx(), {"a": 1, "b": {"x": 1, "y": 2}})
    assert base == task_input_hash(ctx(), {"b": {"y": 2, "x": 1}, "a": 1})
    assert base != task_input_hash(ctx("pkg.mod.other"), {"a": 1, "b": {"x": 1, "y": 2}})
    assert base != task_input_hash(ctx(), {"a": 2, "b": {"x": 1, "y": 2}})
    assert task_input_hash(ctx(), {"a": [1, 2]}) != task_input_hash(ctx(), {"a": (1, 2)})
    assert task_input_hash(ctx(), {"a": 1}) != task_input_hash(ctx(), {"a": "1"})


def test_unhashable_arguments_mean_no_cache_key() -> None:
    assert task_input_hash(ctx(), {"lock": threading.Lock()}) is None


def test_file_cache_round_trip_and_expiry(tmp_path) -> None:
    now = [T0]
    cache = ResultCache(tmp_path / "results", clock=lambda: now[0])
    assert cache.get("k") is None
    assert cache.put("k", {"rows": 3}, timedelta(minutes=1))
    assert cache.put("none", None)  # a cached None is still a hit
    assert cache.get("k").value == {"rows": 3} and cache.get("none").value is None
    now[0] += 59
    assert cache.get("k") is not None
    now[0] += 1
    assert cache.get("k") is None
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        f"{__import__('hashlib').sha256(b'none').hexdigest()}.pkl"
    ]  # the expired entry was removed; no temporary file is left


def test_unreadable_entry_is_a_miss_and_unpicklable_results_are_not_cached(tmp_path, caplog) -> None:
    cache = ResultCache(tmp_path)
    cache.put("k", 1)
    (entry,) = tmp_path.iterdir()
    entry.write_bytes(b"not a pickle")
    assert cache.get("k") is None
    assert "unreadable" in caplog.text
    assert cache.put("lock", threading.Lock()) is False


def test_second_call_with_the_same_inputs_does_not_run_the_body(harness) -> None:
    calls = []

    @task(cache_key_fn=task_input_hash)
    def load(table: str, limit: int = 10) -> list[int]:
        calls.append((table, limit))
        return list(range(limit))

    @flow
    def pipeline() -> tuple[list[int], list[int], list[int], list[int]]:
        return load("users", 3), load("users", limit=3), load("orders", 3), load("users")

    first = pipeline()
    assert first == ([0, 1, 2], [0, 1, 2], [0, 1, 2], list(range(10)))
    assert calls == [("users", 3), ("orders", 3), ("users", 10)]
    assert pipeline() == first  # a new flow run: everything from the cache
    assert len(calls) == 3
    cached = [r for r in harness.recorder.reports if r.payload.get("cached")]
    assert len(cached) == 5
    for report in cached:
        assert harness.recorder.states_of(report.run.id) == ["Pending", "Completed"]


def test_cache_expiry_runs_the_body_again(harness) -> None:
    calls = []

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=1))
    def fetch(day: str) -> str:
        calls.append(day)
        return f"data of {day} #{len(calls)}"

    assert fetch("mon") == "data of mon #1"
    harness.advance(3599)
    assert fetch("mon") == "data of mon #1"
    harness.advance(1)
    assert fetch("mon") == "data of mon #2"
    assert calls == ["mon", "mon"]


def test_failed_runs_are_not_cached_and_a_custom_key_can_opt_out(harness) -> None:
    calls = []

    def only_big(context, arguments) -> str | None:
        assert context.task.name == "compute" and context.info.task_name == "compute"
        return f"compute-{arguments['n']}" if arguments["n"] > 10 else None

    @task(cache_key_fn=only_big)
    def compute(n: int) -> int:
        calls.append(n)
        if n == 13:
            raise ValueError("unlucky")
        return n

    compute(5), compute(5), compute(50), compute(50)
    for _ in range(2):
        with pytest.raises(ValueError):
            compute(13)
    assert calls == [5, 5, 50, 13, 13]
    assert harness.cache.get("compute-50").value == 50


def test_the_cache_is_written_under_the_home_results_dir(tmp_path) -> None:
    cache = ResultCache.under(tmp_path / "home")
    cache.put("k", json.dumps({"a": 1}))
    assert (tmp_path / "home" / "results").is_dir()
