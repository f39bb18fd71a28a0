"""AutomationStore and FiringStore on real SQL (SQLite and PostgreSQL) and a real Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select, update

from triggers.files import parse_automation
from triggers.firings import ActionDescriptor, FiringRow, FiringStore
from triggers.models import Automation, EventTrigger
from triggers.outbox import outbox_message
from triggers.outcomes import Firing, Resolution
from triggers.store import AutomationStore
from tripwire.db import Database
from tripwire.errors import NotFound, ValidationFailed
from tripwire.settings import StreamSettings
from tripwire.tables import automations, firings

pytestmark = pytest.mark.redis

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def a_rule(name: str = "etl keeps failing", **trigger: Any) -> Automation:
    """An automation as a file or the API gives it: id and enabled unset unless named."""
    document = {
        "name": name,
        "trigger": {"type": "event", "expect": ["tripwire.flow-run.Failed"], "threshold": 3, **trigger},
        "actions": [{"type": "do-nothing"}],
    }
    return parse_automation(document)


@pytest.fixture
def store(
    database: Database, redis_client: aioredis.Redis, stream_settings: StreamSettings
) -> AutomationStore:
    return AutomationStore(database, redis_client, stream_settings)


@pytest.fixture
def firing_store(database: Database) -> FiringStore:
    return FiringStore(database)


# -- create, get, list ---------------------------------------------------------------------------------


async def test_create_then_get_by_id_name_and_either(store: AutomationStore) -> None:
    rule = a_rule()
    created = await store.create(rule)
    assert (created.version, created.id, created.enabled) == (1, rule.id, True)
    assert created.created == created.updated
    for found in (
        await store.get(rule.id),
        await store.get_by_name("etl keeps failing"),
        await store.resolve("etl keeps failing"),
        await store.resolve(str(rule.id)),
    ):
        assert found == created
        assert found.automation == rule
    assert [s.name for s in await store.list()] == ["etl keeps failing"]


async def test_a_taken_name_is_refused_naming_the_field(store: AutomationStore) -> None:
    await store.create(a_rule())
    with pytest.raises(ValidationFailed) as caught:
        await store.create(a_rule(threshold=5))
    [(loc, message)] = caught.value.errors
    assert loc == "name"
    assert "'etl keeps failing' already exists" in message
    assert await store.count() == 1


async def test_a_taken_id_is_refused_naming_the_field(store: AutomationStore) -> None:
    first = await store.create(a_rule("first"))
    with pytest.raises(ValidationFailed) as caught:
        await store.create(a_rule("second").model_copy(update={"id": first.id}))
    assert [loc for loc, _ in caught.value.errors] == ["id"]


async def test_unknown_automations_are_not_found_with_a_clear_message(store: AutomationStore) -> None:
    with pytest.raises(NotFound, match=r"no automation named 'nope' \(`tripwire automation ls` lists them\)"):
        await store.get_by_name("nope")
    missing = uuid.uuid4()
    with pytest.raises(NotFound, match=f"no automation with id {missing}"):
        await store.get(missing)
    with pytest.raises(NotFound, match=f"no automation with id or name '{missing}'"):
        await store.resolve(str(missing))  # an id that is not stored is tried as a name too
    with pytest.raises(NotFound):
        await store.delete("nope")
    with pytest.raises(NotFound):
        await store.set_enabled("nope", False)


async def test_a_name_that_looks_like_an_id_still_resolves(store: AutomationStore) -> None:
    name = str(uuid.uuid4())
    await store.create(a_rule(name))
    assert (await store.resolve(name)).name == name


# -- apply -------------------------------------------------------------------------------------------


async def test_apply_creates_then_is_idempotent_then_updates(store: AutomationStore) -> None:
    first = await store.apply(a_rule())
    assert (first.status, first.stored.version) == ("created", 1)

    again = await store.apply(a_rule())  # a new random id, unset: the stored id is kept
    assert (again.status, again.stored.version, again.stored.id) == ("unchanged", 1, first.stored.id)

    changed = await store.apply(a_rule(threshold=5))
    assert (changed.status, changed.stored.version, changed.stored.id) == ("updated", 2, first.stored.id)
    stored = await store.get_by_name("etl keeps failing")
    assert stored.automation.trigger.threshold == 5  # type: ignore[union-attr]
    assert stored.version == 2
    assert stored.created == first.stored.created
    assert stored.updated >= stored.created


async def test_apply_with_another_explicit_id_is_refused(store: AutomationStore) -> None:
    await store.apply(a_rule())
    other = a_rule().model_copy(update={"id": uuid.uuid4()})
    other.model_fields_set.add("id")
    with pytest.raises(ValidationFailed) as caught:
        await store.apply(other)
    [(loc, message)] = caught.value.errors
    assert loc == "id"
    assert "apply matches automations by name" in message


async def test_apply_keeps_a_paused_automation_paused_unless_enabled_is_given(store: AutomationStore) -> None:
    await store.apply(a_rule())
    await store.set_enabled("etl keeps failing", False)
    kept = await store.apply(a_rule())
    assert (kept.status, kept.stored.enabled) == ("unchanged", False)

    document = a_rule().model_dump(mode="json", exclude={"id"})  # names enabled: true
    resumed = await store.apply(Automation.model_validate(document))
    assert (resumed.status, resumed.stored.enabled) == ("updated", True)


async def test_the_stored_document_is_the_model_dump(store: AutomationStore, database: Database) -> None:
    rule = a_rule(within="PT10M")
    await store.create(rule)
    async with database.read() as conn:
        row = (await conn.execute(select(automations))).one()
    assert row.document == rule.model_dump(mode="json")
    assert row.document["trigger"]["within"] == 600
    assert (row.name, row.enabled, row.id, row.version) == (rule.name, True, rule.id, 1)


async def test_concurrent_applies_of_one_name_create_once_and_lose_no_version(store: AutomationStore) -> None:
    results = await asyncio.gather(*(store.apply(a_rule(threshold=n)) for n in range(1, 7)))
    statuses = sorted(r.status for r in results)
    assert statuses.count("created") == 1
    stored = await store.get_by_name("etl keeps failing")
    assert stored.version == 1 + statuses.count("updated")
    assert len({r.stored.id for r in results}) == 1


async def test_apply_many_is_all_or_nothing(store: AutomationStore) -> None:
    existing = await store.create(a_rule("existing"))
    clash = a_rule("clash").model_copy(update={"id": existing.id})  # an id that belongs to another
    clash.model_fields_set.add("id")
    with pytest.raises(ValidationFailed) as caught:
        await store.apply_many([a_rule("new"), clash])
    assert [loc for loc, _ in caught.value.errors] == ["automations[1].id"]
    assert [s.name for s in await store.list()] == ["existing"]  # "new" was rolled back
    assert await store.changes_version() == 1

    results = await store.apply_many([a_rule("new"), a_rule("existing"), a_rule("other", threshold=2)])
    assert [(r.status, r.stored.name) for r in results] == [
        ("created", "new"),
        ("unchanged", "existing"),
        ("created", "other"),
    ]
    assert await store.changes_version() == 2  # one bump for the whole batch


async def test_apply_many_refuses_a_name_given_twice(store: AutomationStore) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await store.apply_many([a_rule("a"), a_rule("b"), a_rule("a", threshold=2)])
    assert caught.value.errors == [("automations[2].name", "'a' is also automations[0]")]
    assert await store.count() == 0


# -- pause, resume, delete ------------------------------------------------------------------------------


async def test_pause_and_resume_bump_the_version_once(store: AutomationStore) -> None:
    created = await store.create(a_rule())
    paused = await store.set_enabled(str(created.id), False)
    assert (paused.enabled, paused.version, paused.automation.enabled) == (False, 2, False)
    again = await store.set_enabled("etl keeps failing", False)
    assert again.version == 2
    resumed = await store.set_enabled("etl keeps failing", True)
    assert (resumed.enabled, resumed.version) == (True, 3)
    assert (await store.get(created.id)).automation.enabled is True


async def test_delete_removes_the_automation_and_its_firings(
    store: AutomationStore, firing_store: FiringStore
) -> None:
    doomed = await store.create(a_rule("doomed"))
    kept = await store.create(a_rule("kept"))
    await firing_store.record([a_firing(doomed.id, 0), a_firing(kept.id, 0)])
    deleted = await store.delete("doomed")
    assert deleted.id == doomed.id
    with pytest.raises(NotFound):
        await store.get(doomed.id)
    assert (await firing_store.list(doomed.id)).firings == []
    assert len((await firing_store.list(kept.id)).firings) == 1


# -- change counter and loading for the evaluator ---------------------------------------------------------


async def test_every_change_bumps_the_redis_counter_and_nothing_else_does(
    store: AutomationStore, redis_client: aioredis.Redis, stream_settings: StreamSettings
) -> None:
    assert store.version_key == f"{stream_settings.prefix}:automations:version"
    assert await store.changes_version() == 0
    seen = []
    steps = [
        store.create(a_rule("one")),
        store.apply(a_rule("two")),
        store.apply(a_rule("two")),  # unchanged
        store.apply(a_rule("two", threshold=9)),
        store.set_enabled("one", False),
        store.set_enabled("one", False),  # already paused
        store.set_enabled("one", True),
        store.delete("two"),
        store.list(),
        store.load_enabled(),
    ]
    for step in steps:
        await step
        seen.append(await store.changes_version())
    assert seen == [1, 2, 2, 3, 4, 4, 5, 6, 6, 6]
    assert int(await redis_client.get(store.version_key)) == 6


async def test_load_enabled_gives_the_enabled_automations(store: AutomationStore) -> None:
    await store.create(a_rule("b"))
    await store.create(a_rule("a"))
    await store.create(a_rule("paused"))
    await store.set_enabled("paused", False)
    loaded = await store.load_enabled()
    assert [a.name for a in loaded] == ["a", "b"]
    assert all(isinstance(a.trigger, EventTrigger) for a in loaded)


async def test_load_enabled_skips_a_stored_document_that_no_longer_validates(
    store: AutomationStore, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    good = await store.create(a_rule("good"))
    bad = await store.create(a_rule("bad"))
    broken = bad.automation.model_dump(mode="json")
    broken["trigger"]["threshold"] = 0
    async with database.begin() as conn:
        await conn.execute(update(automations).where(automations.c.id == bad.id).values(document=broken))
    assert [a.id for a in await store.load_enabled()] == [good.id]
    assert "automation 'bad'" in caplog.text and "no longer valid" in caplog.text


async def test_enabled_automations_come_with_when_they_were_last_enabled(
    database: Database, redis_client: aioredis.Redis, stream_settings: StreamSettings
) -> None:
    """Trigger state starts at enabling and outlives edits (a changed trigger is told by its digest)."""
    times = iter(T0 + timedelta(minutes=m) for m in range(100))
    store = AutomationStore(database, redis_client, stream_settings, clock=lambda: next(times))
    await store.create(a_rule("a"))  # T0
    await store.create(a_rule("b"))  # +1
    await store.apply(a_rule("a", threshold=5))  # +2: an edit keeps a's enabling time
    await store.set_enabled("b", False)  # +3
    await store.set_enabled("b", True)  # +4: enabled again, state starts afresh
    await store.create(a_rule("c"))  # +5
    await store.set_enabled("c", False)  # +6
    found = [(a.name, t) for a, t in await store.enabled_automations()]
    assert found == [("a", T0), ("b", T0 + timedelta(minutes=4))]


# -- firings ------------------------------------------------------------------------------------------


def a_firing(automation_id: uuid.UUID, minute: int, **fields: Any) -> FiringRow:
    event_id = uuid.uuid4()
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "automation_id": automation_id,
        "kind": "triggered",
        "trigger_path": "",
        "labels": {"related:deployment:tripwire.resource.id": "tripwire.deployment.etl"},
        "event_id": event_id,
        "event_ids": [uuid.uuid4(), uuid.uuid4(), event_id],
        "occurred": T0 + timedelta(minutes=minute),
        "actions": [ActionDescriptor(index=0, type="do-nothing", status="queued")],
    }
    values.update(fields)
    return FiringRow(**values)


async def test_firings_are_recorded_once_and_read_back_equal(firing_store: FiringStore) -> None:
    automation_id = uuid.uuid4()
    first = a_firing(automation_id, 0)
    dry = [ActionDescriptor(index=0, type="do-nothing", status="would have run")]
    resolved = a_firing(
        automation_id, 10, kind="resolved", event_id=None, event_ids=[], mode="dry-run", actions=dry
    )
    assert await firing_store.record([first, resolved, first]) == 2
    assert await firing_store.record([first, resolved]) == 0  # a redelivery changes nothing
    page = await firing_store.list(automation_id)
    assert page.firings == [resolved, first]
    assert page.next_cursor is None
    assert await firing_store.record([]) == 0


async def test_firings_page_newest_first_without_gaps_or_repeats(firing_store: FiringStore) -> None:
    automation_id = uuid.uuid4()
    rows = [a_firing(automation_id, minute // 2) for minute in range(11)]  # pairs share a time
    await firing_store.record(rows)
    await firing_store.record([a_firing(uuid.uuid4(), 3)])  # another automation's
    seen: list[FiringRow] = []
    cursor = None
    pages = 0
    while True:
        page = await firing_store.list(automation_id, limit=3, cursor=cursor)
        seen.extend(page.firings)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 4
    assert sorted(r.id for r in seen) == sorted(r.id for r in rows)
    assert seen == sorted(rows, key=lambda r: (r.occurred, r.id), reverse=True)


@pytest.mark.parametrize("cursor", ["not-a-cursor", "", "bm9wZXxub3Bl"])
async def test_a_foreign_cursor_is_refused(firing_store: FiringStore, cursor: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await firing_store.list(uuid.uuid4(), cursor=cursor)
    assert [loc for loc, _ in caught.value.errors] == ["cursor"]


async def test_a_page_size_out_of_range_is_refused(firing_store: FiringStore) -> None:
    with pytest.raises(ValidationFailed, match="limit"):
        await firing_store.list(uuid.uuid4(), limit=0)


async def test_firing_rows_round_trip_through_the_table(
    firing_store: FiringStore, database: Database
) -> None:
    row = a_firing(uuid.uuid4(), 1)
    await firing_store.record([row])
    async with database.read() as conn:
        stored = (await conn.execute(select(firings))).one()
    assert stored.actions == [{"index": 0, "type": "do-nothing", "status": "queued"}]
    assert stored.event_ids == [str(e) for e in row.event_ids]
    assert stored.occurred == row.occurred


async def test_outbox_messages_are_recorded_as_firings(firing_store: FiringStore) -> None:
    rule = a_rule().model_copy(update={"mode": "dry-run"})
    event_ids = (uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    labels = {"related:deployment:tripwire.resource.id": "tripwire.deployment.etl"}
    fired = Firing(
        id=uuid.uuid4(), automation_id=rule.id, trigger_path="", labels=labels, event_id=event_ids[-1],
        event_ids=event_ids, fire_time=T0, processing=7, record_key="k1",
    )  # fmt: skip
    resolved = Resolution(
        id=uuid.uuid4(), automation_id=rule.id, trigger_path="", labels=labels, event_id=None,
        resolve_time=T0 + timedelta(minutes=10), processing=8, firing_id=fired.id, firings=1, record_key="k2",
    )  # fmt: skip
    docs = [json.loads(outbox_message(rule, outcome)) for outcome in (fired, resolved)]
    assert await firing_store.record_outbox(docs) == 2
    assert await firing_store.record_outbox(docs) == 0
    newest, oldest = (await firing_store.list(rule.id)).firings
    assert (oldest.id, oldest.kind, oldest.occurred, oldest.labels) == (fired.id, "triggered", T0, labels)
    assert (oldest.event_id, oldest.event_ids, oldest.mode) == (event_ids[-1], list(event_ids), "dry-run")
    assert oldest.actions == [ActionDescriptor(index=0, type="do-nothing", status="would have run")]
    assert (newest.id, newest.kind, newest.event_id, newest.event_ids) == (resolved.id, "resolved", None, [])
    assert newest.actions == []  # a_rule has no actions_on_resolve
