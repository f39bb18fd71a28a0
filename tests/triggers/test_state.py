"""Record keys and the in-memory state store."""

from __future__ import annotations

import pytest

from triggers.state import (
    MemoryStateStore,
    composite_record_key,
    event_record_key,
    parse_record_key,
    record_key_values,
)

AID = "3f2b8a4e-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    "values",
    [
        pytest.param((), id="no-for-each"),
        pytest.param(("bench.run.1",), id="one"),
        pytest.param(("", "k8s/prod"), id="empty-and-slash"),
        pytest.param(('a"b\\c', "é\u2028\x01"), id="escapes"),
    ],
)
def test_event_record_keys_round_trip(values: tuple[str, ...]) -> None:
    key = event_record_key(AID, "t.0.1", values)
    assert key.startswith(f"{{{AID}}}/t.0.1/")
    assert parse_record_key(key) == (AID, "t.0.1")
    assert record_key_values(key) == values


def test_composite_record_key() -> None:
    key = composite_record_key(AID, "t")
    assert key == f"{{{AID}}}/t"
    assert parse_record_key(key) == (AID, "t")


def test_store_reads_writes_and_indexes_due_times() -> None:
    store = MemoryStateStore()
    store.put("a", {"n": 1}, 30)
    store.put("b", {"n": 2}, 10)
    store.put("c", {"n": 3})
    assert store.get_many(["a", "c", "zz"]) == {"a": {"n": 1}, "c": {"n": 3}}
    assert store.due(20) == [(10, "b")]
    assert store.due(20) == [(10, "b")], "due() does not consume"
    store.put("b", {"n": 2}, 40)
    assert store.due(35) == [(30, "a")]
    store.put("a", {"n": 1})
    store.delete("b")
    assert store.due(100) == []
    assert store.due_of("a") is None
    assert len(store) == 2


def test_tracking_store_reports_changes_for_write_back() -> None:
    overlay = MemoryStateStore(track=True)
    overlay.load({"a": ({"n": 1}, 5), "b": ({"n": 2}, None)})
    assert overlay.drain_changes() == {}
    assert overlay.due(10) == [(5, "a")]
    overlay.put("a", {"n": 9}, None)
    overlay.delete("b")
    assert overlay.drain_changes() == {"a": ({"n": 9}, None), "b": (None, None)}
    assert overlay.drain_changes() == {}
