"""DeploymentStore on SQLite and PostgreSQL, with its pause/resume events on a real Redis stream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.bus import RedisBus
from events.codec import decode_event
from events.emit import EventEmitter
from tripwire.errors import NotFound, ValidationFailed
from tripwire.orchestration.deployments import DeploymentSpec, DeploymentStore, parse_deployment
from tripwire.orchestration.runs import NewFlowRun
from tripwire.orchestration.states import State

pytestmark = [pytest.mark.redis]

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

ETL_SCHEMA = {
    "type": "object",
    "title": "etl",
    "additionalProperties": False,
    "properties": {
        "day": {"type": "string", "format": "date", "title": "Day"},
        "limit": {"type": "integer", "default": 100, "title": "Limit"},
        "mode": {"enum": ["full", "delta"], "type": "string", "default": "full"},
    },
    "required": ["day"],
}


def etl_document(**changes: Any) -> dict[str, Any]:
    return {
        "name": "nightly-etl",
        "flow_name": "etl",
        "entrypoint": "/srv/flows/etl.py:etl",
        "parameters": {"day": "2026-11-21", "limit": 10},
        "parameter_schema": ETL_SCHEMA,
        "tags": ["nightly"],
        "schedules": [
            {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
            {"interval": 3600},
        ],
        **changes,
    }


def spec(**changes: Any) -> DeploymentSpec:
    return parse_deployment(etl_document(**changes))


@pytest.fixture
async def emitter(redis_client, settings):
    bus = RedisBus(redis_client, settings.streams)
    yield EventEmitter(bus, settings)
    await bus.close()


@pytest.fixture
def clock() -> list[datetime]:
    return [T0]


@pytest.fixture
def store(database, emitter, clock) -> DeploymentStore:
    return DeploymentStore(database, emitter, clock=lambda: clock[0])


async def events_of(redis_client, settings, prefix: str) -> list:
    entries = await redis_client.xrange(settings.streams.events)
    found = [decode_event(fields[b"data"]) for _, fields in entries]
    return [e for e in found if e.event.startswith(prefix)]


async def schedule_runs(store: DeploymentStore, deployment, schedule_index: int, *times: datetime) -> list:
    """Runs as the scheduler makes them: with the schedule's id and an idempotency key."""
    stored = deployment.schedules[schedule_index]
    made = await store.runs.create_many(
        [
            NewFlowRun(
                flow_name=deployment.flow_name, parameters=deployment.parameters, deployment_id=deployment.id,
                schedule_id=stored.id, work_pool=deployment.work_pool, scheduled_time=t,
                idempotency_key=f"schedule:{stored.id}:{t.isoformat()}",
            )
            for t in times
        ]
    )  # fmt: skip
    return [run for run, _ in made]


# -- apply ----------------------------------------------------------------------------------------------


async def test_apply_creates_then_is_idempotent_then_updates(store: DeploymentStore, clock) -> None:
    created = await store.apply(spec())
    assert created.status == "created"
    deployment = created.deployment
    assert (deployment.version, deployment.work_pool, deployment.paused) == (1, "default", False)
    assert [s.summary for s in deployment.schedules] == ["cron 0 2 * * * (Europe/Berlin)", "every 1h"]
    assert [s.position for s in deployment.schedules] == [0, 1]

    again = await store.apply(spec())
    assert again.status == "unchanged" and again.deployment == deployment

    clock[0] = T0 + timedelta(minutes=5)
    updated = await store.apply(spec(parameters={"day": "2026-11-22"}, description="nightly load"))
    assert updated.status == "updated"
    assert updated.deployment.version == 2 and updated.deployment.updated == clock[0]
    assert updated.deployment.parameters == {"day": "2026-11-22"}
    assert [s.id for s in updated.deployment.schedules] == [s.id for s in deployment.schedules]
    assert await store.get(deployment.id) == updated.deployment
    assert await store.resolve("nightly-etl") == await store.resolve(str(deployment.id)) == updated.deployment
    assert [d.name for d in await store.list()] == ["nightly-etl"]


async def test_schedules_keep_their_ids_when_unchanged_even_reordered(store: DeploymentStore) -> None:
    first = (await store.apply(spec())).deployment
    cron_id, interval_id = (s.id for s in first.schedules)
    swapped = etl_document()["schedules"][::-1]
    second = (await store.apply(spec(schedules=[*swapped, {"rrule": "FREQ=DAILY;BYHOUR=6"}]))).deployment
    assert [s.id for s in second.schedules[:2]] == [interval_id, cron_id]
    assert [s.position for s in second.schedules] == [0, 1, 2]
    assert second.schedules[2].id not in (cron_id, interval_id)
    third = (
        await store.apply(spec(schedules=[{"cron": "0 3 * * *", "timezone": "Europe/Berlin"}]))
    ).deployment
    assert [s.summary for s in third.schedules] == ["cron 0 3 * * * (Europe/Berlin)"]
    assert third.schedules[0].id not in (cron_id, interval_id)


async def test_reapplying_resumes_nothing_that_was_paused(store: DeploymentStore) -> None:
    deployment = (await store.apply(spec())).deployment
    assert await store.set_paused("nightly-etl", True)
    assert await store.set_schedule_active("nightly-etl", 1, False)
    again = await store.apply(spec())
    assert again.status == "unchanged"
    assert again.deployment.paused and [s.active for s in again.deployment.schedules] == [True, False]
    explicit = etl_document(paused=False)
    explicit["schedules"][1]["active"] = True
    resumed = (await store.apply(parse_deployment(explicit))).deployment
    assert not resumed.paused and [s.active for s in resumed.schedules] == [True, True]
    assert [s.id for s in resumed.schedules] == [s.id for s in deployment.schedules]


@pytest.mark.parametrize(
    ("changes", "loc", "says"),
    [
        pytest.param({"parameters": {"day": "2026-11-21", "limit": "ten"}}, "parameters.limit",
                     'expected an integer, got "ten"', id="default-of-wrong-type"),
        pytest.param({"parameters": {"day": "2026-11-21", "size": 1}}, "parameters.size",
                     "unknown parameter; etl takes day, limit, mode", id="unknown-default"),
        pytest.param({"parameters": {}}, "parameters.day", "a deployment with schedules needs a default",
                     id="schedules-need-required-defaults"),
        pytest.param({"parameter_schema": {"type": "object", "properties": {"a": {"type": "int"}}}},
                     "parameter_schema", "not a valid JSON schema", id="bad-schema"),
    ],
)  # fmt: skip
async def test_apply_checks_the_defaults_against_the_flow(
    store: DeploymentStore, changes: dict[str, Any], loc: str, says: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await store.apply(spec(**changes))
    assert says in dict(caught.value.errors)[loc]
    assert await store.list() == []


async def test_without_schedules_defaults_may_leave_required_parameters_to_each_run(
    store: DeploymentStore,
) -> None:
    result = await store.apply(spec(parameters={}, schedules=[]))
    assert result.status == "created"


@pytest.mark.parametrize(
    ("changes", "loc", "says"),
    [
        pytest.param({"entrypoint": "etl"}, "entrypoint", "is not '<file.py or module>", id="entrypoint"),
        pytest.param({"name": " etl"}, "name", "must not start or end with spaces", id="name-spaces"),
        pytest.param({"tags": [""]}, "tags", "a tag must not be empty", id="empty-tag"),
        pytest.param({"timeout_seconds": 0}, "timeout_seconds", "greater than 0", id="timeout"),
        pytest.param({"colour": "red"}, "colour", "unknown field", id="unknown-field"),
    ],
)  # fmt: skip
def test_a_bad_document_is_refused_naming_the_field(changes: dict[str, Any], loc: str, says: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_deployment(etl_document(**changes))
    assert says in dict(caught.value.errors)[loc]


async def test_two_appliers_of_a_new_name_create_it_once(store: DeploymentStore, database, emitter) -> None:
    other = DeploymentStore(database, emitter)
    results = await asyncio.gather(store.apply(spec()), other.apply(spec()))
    assert sorted(r.status for r in results) == ["created", "unchanged"]
    assert len(await store.list()) == 1


# -- pause / resume -------------------------------------------------------------------------------------


async def test_pausing_deletes_unstarted_scheduled_runs_and_announces(
    store: DeploymentStore, redis_client, settings
) -> None:
    deployment = (await store.apply(spec())).deployment
    scheduled = await schedule_runs(store, deployment, 0, T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    started = (await schedule_runs(store, deployment, 1, T0 - timedelta(hours=2)))[0]
    (claimed,) = await store.runs.claim("default", "w1")
    assert claimed.id == started.id and claimed.state is State.PENDING
    late = (await schedule_runs(store, deployment, 1, T0 - timedelta(hours=1)))[0]
    await store.runs.transition(late.id, State.LATE)
    manual, _ = await store.create_run("nightly-etl", scheduled_time=T0 + timedelta(hours=1))

    assert await store.set_paused("nightly-etl", True) is True
    assert await store.set_paused(deployment.id, True) is False
    left = {r.id for r in await store.runs.list(deployment_id=deployment.id)}
    assert left == {started.id, manual.id}  # started and manual runs stay; Scheduled/Late ones went
    assert not {late.id, *(r.id for r in scheduled)} & left

    assert await store.set_paused("nightly-etl", False) is True
    events = await events_of(redis_client, settings, "tripwire.deployment.")
    assert [e.event for e in events] == ["tripwire.deployment.paused", "tripwire.deployment.resumed"]
    assert events[0].resource["tripwire.resource.id"] == f"tripwire.deployment.{deployment.id}"
    assert events[0].resource["tripwire.resource.name"] == "nightly-etl"
    assert (await store.get(deployment.id)).version == 3


async def test_pausing_a_schedule_by_index_or_id(store: DeploymentStore, redis_client, settings) -> None:
    deployment = (await store.apply(spec())).deployment
    interval = deployment.schedules[1]
    cron_runs = await schedule_runs(store, deployment, 0, T0 + timedelta(hours=1))
    await schedule_runs(store, deployment, 1, T0 + timedelta(hours=1))

    assert await store.set_schedule_active("nightly-etl", 1, False) is True
    assert await store.set_schedule_active("nightly-etl", str(interval.id), False) is False
    left = await store.runs.list(deployment_id=deployment.id)
    assert [r.id for r in left] == [r.id for r in cron_runs]
    paused = await store.get(deployment.id)
    assert [s.active for s in paused.schedules] == [True, False]
    assert paused.schedules[1].version == 2 and paused.version == 1

    assert await store.set_schedule_active(deployment.id, "1", True) is True
    events = await events_of(redis_client, settings, "tripwire.schedule.")
    assert [e.event for e in events] == ["tripwire.schedule.paused", "tripwire.schedule.resumed"]
    assert events[0].resource["tripwire.resource.id"] == f"tripwire.schedule.{interval.id}"
    assert events[0].related[0]["tripwire.resource.id"] == f"tripwire.deployment.{deployment.id}"
    assert events[0].payload["schedule"] == "every 1h"

    with pytest.raises(NotFound, match="has no schedule '5'; give an index or an id"):
        await store.set_schedule_active("nightly-etl", 5, False)


# -- runs -----------------------------------------------------------------------------------------------


async def test_create_run_merges_defaults_and_names_bad_parameters(store: DeploymentStore) -> None:
    deployment = (await store.apply(spec())).deployment
    run, created = await store.create_run(
        "nightly-etl", {"limit": 5, "mode": "delta"}, tags=["manual", "nightly"], idempotency_key="k1"
    )
    assert created and run.state is State.SCHEDULED and run.scheduled_time == T0
    assert run.parameters == {"day": "2026-11-21", "limit": 5, "mode": "delta"}
    assert (run.deployment_id, run.deployment_name, run.flow_name) == (deployment.id, "nightly-etl", "etl")
    assert run.work_pool == "default" and run.tags == ["nightly", "manual"] and run.schedule_id is None
    again, created_again = await store.create_run("nightly-etl", {"limit": 6}, idempotency_key="k1")
    assert not created_again and again.id == run.id

    cases = [
        ({"limit": "bad"}, "parameters.limit", 'expected an integer, got "bad"'),
        ({"day": "2026-13-40"}, "parameters.day", "expected a date"),
        ({"mode": "half"}, "parameters.mode", 'expected "full" or "delta", got "half"'),
        ({"size": 3}, "parameters.size", "unknown parameter; etl takes day, limit, mode"),
    ]
    for parameters, loc, says in cases:
        with pytest.raises(ValidationFailed) as caught:
            await store.create_run("nightly-etl", parameters)
        assert says in dict(caught.value.errors)[loc]
    bare = (await store.apply(spec(name="bare", parameters={}, schedules=[]))).deployment
    with pytest.raises(ValidationFailed) as caught:
        await store.create_run(bare.id)
    assert caught.value.errors == [
        ("parameters.day", "required parameter is missing; give it a value (--param NAME=VALUE)")
    ]
    with pytest.raises(NotFound, match="no deployment with id or name 'nope'"):
        await store.create_run("nope")
    assert len(await store.runs.list(deployment_id=deployment.id)) == 1


async def test_changing_what_runs_carry_remakes_unstarted_runs(store: DeploymentStore) -> None:
    deployment = (await store.apply(spec())).deployment
    await schedule_runs(store, deployment, 0, T0 + timedelta(hours=1))
    assert (await store.apply(spec(description="only words"))).status == "updated"
    assert len(await store.runs.list(deployment_id=deployment.id)) == 1  # nothing runs differently
    assert (await store.apply(spec(tags=["nightly", "big"]))).status == "updated"
    assert await store.runs.list(deployment_id=deployment.id) == []


async def test_delete_removes_schedules_and_unstarted_runs(store: DeploymentStore, database) -> None:
    deployment = (await store.apply(spec())).deployment
    await schedule_runs(store, deployment, 0, T0 + timedelta(hours=1))
    await store.create_run("nightly-etl")
    deleted = await store.delete("nightly-etl")
    assert deleted.id == deployment.id
    assert await store.list() == []
    assert await store.runs.list(deployment_id=deployment.id) == []
    with pytest.raises(NotFound):
        await store.get(deployment.id)
    with pytest.raises(NotFound):
        await store.delete("nightly-etl")


async def test_spec_round_trips(store: DeploymentStore) -> None:
    deployment = (await store.apply(spec(timeout_seconds=90, description="d"))).deployment
    again = await store.apply(deployment.spec())
    assert again.status == "unchanged"
    assert deployment.timeout_seconds == 90
