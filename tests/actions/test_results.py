"""ActionResultStore on SQLite and PostgreSQL: upsert by idempotency key, reads by firing and automation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from actions.results import ActionResult, ActionResultStore
from tripwire.db import Database

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def a_result(firing: uuid.UUID, automation: uuid.UUID, index: int, **fields: object) -> ActionResult:
    values: dict[str, object] = {
        "idempotency_key": f"{firing}:triggered:{index}",
        "firing_id": firing,
        "automation_id": automation,
        "kind": "triggered",
        "index": index,
        "type": "call-webhook",
        "status": "succeeded",
        "attempts": 1,
        "detail": {"status_code": 200},
        "finished": T0 + timedelta(seconds=index),
        **fields,
    }
    return ActionResult.model_validate(values)


async def test_results_are_upserted_and_read_by_firing(database: Database) -> None:
    store = ActionResultStore(database)
    automation, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for firing, index in ((first, 1), (first, 0), (second, 0)):
        await store.record(a_result(firing, automation, index))
    again = a_result(first, automation, 0, status="dead-lettered", attempts=3, reason="500", detail={})
    again = again.model_copy(update={"finished": T0 + timedelta(seconds=5)})
    await store.record(again)  # a later run of the same message replaces the row

    by_firing = await store.for_firings([first, second, uuid.uuid4()])
    assert set(by_firing) == {first, second}
    rows = [(r.index, r.status, r.attempts) for r in by_firing[first]]
    assert rows == [(0, "dead-lettered", 3), (1, "succeeded", 1)]
    assert by_firing[first][0] == again
    assert await store.get(again.idempotency_key) == again
    assert await store.get("nothing") is None
    assert [r.idempotency_key for r in await store.list(automation)] == [  # newest first
        f"{first}:triggered:0",
        f"{first}:triggered:1",
        f"{second}:triggered:0",
    ]
    assert await store.for_firings([]) == {}
