"""The actions on orchestration objects, run by the real action runner against real Redis and SQLite:
run-deployment (selected, inferred, idempotent per message, bad parameters), pause/resume of deployments
and schedules, cancel-flow-run and change-flow-run-state, and the failures they record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
import redis.asyncio as aioredis

from actions.outcomes import done_key
from actions.results import ActionResult, ActionResultStore
from actions.runner import ActionRunnerService
from events.codec import decode_event
from events.model import Event
from tests.actions.conftest import Firings, eventually
from tripwire.db import Database
from tripwire.orchestration.deployments import Deployment, DeploymentSpec, DeploymentStore
from tripwire.orchestration.runs import FlowRun, NewFlowRun
from tripwire.orchestration.state_events import run_event
from tripwire.orchestration.states import State
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

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


# --- helpers -----------------------------------------------------------------------------------------------


@pytest.fixture
def store(db: Database) -> DeploymentStore:
    """Sets up deployments and runs; announces nothing (only the actions' events are on the stream)."""
    return DeploymentStore(db, None)


async def nightly_etl(store: DeploymentStore, name: str = "nightly-etl") -> Deployment:
    spec = DeploymentSpec(
        name=name,
        flow_name="etl",
        entrypoint="/srv/flows/etl.py:etl",
        parameters={"day": "2026-11-21", "limit": 10},
        parameter_schema=ETL_SCHEMA,
        tags=["nightly"],
        schedules=[{"cron": "0 2 * * *", "timezone": "Europe/Berlin"}, {"interval": 3600}],
    )
    return (await store.apply(spec)).deployment


async def scheduled_runs(
    store: DeploymentStore, deployment: Deployment, index: int, count: int
) -> list[FlowRun]:
    """Runs as the scheduler makes them: with the schedule's id and its idempotency key."""
    stored = deployment.schedules[index]
    times = [T0 + timedelta(hours=i + 1) for i in range(count)]
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


def event_of(run: FlowRun, state: str = "Failed") -> Event:
    """A flow-run event of ``run`` as the run store announces it (resource, related deployment)."""
    document = run_event(
        "flow-run", run.id, run.name, state, previous="Running", occurred=datetime.now(UTC),
        related=run.related(), id_parts=(state, uuid4()),
    )  # fmt: skip
    return Event.model_validate(document)


def automation(name: str, *actions: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"type": "event", "expect": ["tripwire.flow-run.Failed"], "threshold": 1},
        "actions": list(actions),
    }


async def fire(firings: Firings, *actions: dict[str, Any], event: Event | None = None) -> dict[str, Any]:
    """Store an automation with ``actions`` and fire it, caused by ``event`` (recorded in history)."""
    stored = await firings.store(automation(f"orchestration {uuid4().hex[:8]}", *actions))
    return await firings.fire(stored, [event] if event is not None else [], labels={})


def key_of(doc: dict[str, Any], index: int = 0) -> str:
    return f"{doc['id']}:{doc['kind']}:{index}"


async def result_of(db: Database, key: str) -> ActionResult:
    results = ActionResultStore(db)

    async def done() -> bool:
        return await results.get(key) is not None

    await eventually(done)
    result = await results.get(key)
    assert result is not None
    return result


async def emitted(redis_client: aioredis.Redis, settings: Settings, name: str) -> list[Event]:
    rows = await redis_client.xrange(settings.streams.events)
    return [e for e in (decode_event(fields[b"data"]) for _, fields in rows) if e.event == name]


# --- run-deployment ----------------------------------------------------------------------------------------


async def test_run_deployment_by_name_creates_one_scheduled_run_per_message(
    runner: ActionRunnerService,
    firings: Firings,
    store: DeploymentStore,
    db: Database,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    deployment = await nightly_etl(store)
    other = await store.create_run(deployment.id)  # the run whose failure fires the automation
    action = {
        "type": "run-deployment",
        "deployment": "nightly-etl",
        "parameters": {"day": "2026-12-{{ event.payload.day }}", "mode": "delta", "limit": "{{ 2 * 7 }}"},
        "tags": ["retry"],
    }
    failed = event_of(other[0])
    failed = failed.model_copy(update={"payload": {**failed.payload, "day": "05"}})
    doc = await fire(firings, action, event=failed)

    result = await result_of(db, key_of(doc))
    assert (result.status, result.attempts, result.type) == ("succeeded", 1, "run-deployment")
    assert result.detail["deployment"] == "nightly-etl" and result.detail["created"] is True
    run = await store.runs.get(UUID(result.detail["flow_run_id"]))
    assert run.state is State.SCHEDULED
    assert run.deployment_id == deployment.id
    assert run.parameters == {"day": "2026-12-05", "limit": 14, "mode": "delta"}  # int: read as JSON
    assert run.tags == ["nightly", "retry"]
    assert run.idempotency_key == f"action:{key_of(doc)}"
    assert len(await store.runs.list(deployment_id=deployment.id)) == 2

    # Delivered again after its outcome was forgotten: the same key finds the run it created.
    [(_, fields)] = await redis_client.xrange(settings.streams.actions)
    await redis_client.delete(done_key(settings, key_of(doc)))
    await redis_client.xadd(settings.streams.actions, {"data": fields[b"data"]})

    async def ran_again() -> bool:
        again = await ActionResultStore(db).get(key_of(doc))
        return again is not None and again.detail.get("created") is False

    await eventually(ran_again)
    again = await ActionResultStore(db).get(key_of(doc))
    assert again is not None and again.detail["flow_run_id"] == str(run.id)
    assert len(await store.runs.list(deployment_id=deployment.id)) == 2


async def test_run_deployment_inferred_runs_the_deployment_of_the_failed_run(
    runner: ActionRunnerService, firings: Firings, store: DeploymentStore, db: Database
) -> None:
    await nightly_etl(store, "other")
    deployment = await nightly_etl(store)
    failed, _ = await store.create_run(deployment.id, {"limit": 5})
    doc = await fire(firings, {"type": "run-deployment", "source": "inferred"}, event=event_of(failed))

    result = await result_of(db, key_of(doc))
    assert result.status == "succeeded", result.reason
    assert result.detail["deployment"] == "nightly-etl"
    run = await store.runs.get(UUID(result.detail["flow_run_id"]))
    assert (run.deployment_id, run.state) == (deployment.id, State.SCHEDULED)
    assert run.parameters == {"day": "2026-11-21", "limit": 10}  # the deployment's defaults


async def test_run_deployment_with_a_bad_parameter_fails_naming_it(
    runner: ActionRunnerService, firings: Firings, store: DeploymentStore, db: Database
) -> None:
    deployment = await nightly_etl(store)
    action = {"type": "run-deployment", "deployment": "nightly-etl", "parameters": {"limit": "lots"}}
    doc = await fire(firings, action)

    result = await result_of(db, key_of(doc))
    assert (result.status, result.attempts) == ("failed", 1)  # not retried
    assert result.reason is not None
    assert "nightly-etl" in result.reason and "parameters.limit" in result.reason
    assert await store.runs.list(deployment_id=deployment.id) == []


async def test_a_missing_deployment_fails_the_action(
    runner: ActionRunnerService, firings: Firings, store: DeploymentStore, db: Database
) -> None:
    await nightly_etl(store)
    run_doc = await fire(firings, {"type": "run-deployment", "deployment": "weekly-etl"})
    pause_doc = await fire(firings, {"type": "pause-deployment", "deployment": str(uuid4())})

    for doc in (run_doc, pause_doc):
        result = await result_of(db, key_of(doc))
        assert (result.status, result.attempts) == ("failed", 1)
        assert result.reason is not None and "no deployment with id or name" in result.reason
    assert "'weekly-etl'" in (await result_of(db, key_of(run_doc))).reason  # type: ignore[operator]


async def test_run_deployment_inferred_without_an_event_fails(
    runner: ActionRunnerService, firings: Firings, db: Database
) -> None:
    doc = await fire(firings, {"type": "run-deployment", "source": "inferred"})

    result = await result_of(db, key_of(doc))
    assert result.status == "failed"
    assert result.reason is not None and "cannot infer the deployment" in result.reason


# --- pause / resume ----------------------------------------------------------------------------------------


async def test_pause_then_resume_a_selected_deployment(
    runner: ActionRunnerService,
    firings: Firings,
    store: DeploymentStore,
    db: Database,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    deployment = await nightly_etl(store)
    await scheduled_runs(store, deployment, 0, 2)
    await scheduled_runs(store, deployment, 1, 3)
    asked, _ = await store.create_run(deployment.id)  # asked for by hand: not the scheduler's to delete
    running, _ = await store.create_run(deployment.id)
    await store.runs.transition(running.id, State.PENDING)
    started = [(await store.runs.transition(running.id, State.RUNNING)).id]

    doc = await fire(firings, {"type": "pause-deployment", "deployment": "nightly-etl"})
    result = await result_of(db, key_of(doc))
    assert result.status == "succeeded", result.reason
    assert result.detail == {"deployment": "nightly-etl", "paused": True, "changed": True}
    assert (await store.get(deployment.id)).paused is True
    left = {r.id for r in await store.runs.list(deployment_id=deployment.id)}
    assert left == {asked.id, *started}
    [paused] = await emitted(redis_client, settings, "tripwire.deployment.paused")
    assert paused.resource["tripwire.resource.id"] == f"tripwire.deployment.{deployment.id}"

    again = await fire(firings, {"type": "pause-deployment", "deployment": str(deployment.id)})
    assert (await result_of(db, key_of(again))).detail["changed"] is False  # already paused: succeeds

    resume = await fire(firings, {"type": "resume-deployment", "deployment": "nightly-etl"})
    result = await result_of(db, key_of(resume))
    assert result.status == "succeeded", result.reason
    assert result.detail == {"deployment": "nightly-etl", "paused": False, "changed": True}
    assert (await store.get(deployment.id)).paused is False
    assert len(await emitted(redis_client, settings, "tripwire.deployment.resumed")) == 1
    assert len(await emitted(redis_client, settings, "tripwire.deployment.paused")) == 1


async def test_pause_schedule_inferred_pauses_the_schedule_that_made_the_run(
    runner: ActionRunnerService,
    firings: Firings,
    store: DeploymentStore,
    db: Database,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    deployment = await nightly_etl(store)
    cron_runs = await scheduled_runs(store, deployment, 0, 2)
    hourly = await scheduled_runs(store, deployment, 1, 3)
    failed = (await store.runs.get(hourly[0].id)).model_copy(update={"state": State.FAILED})

    doc = await fire(firings, {"type": "pause-schedule", "source": "inferred"}, event=event_of(failed))
    result = await result_of(db, key_of(doc))
    assert result.status == "succeeded", result.reason
    stored = deployment.schedules[1]
    assert result.detail == {
        "deployment": "nightly-etl", "schedule": str(stored.id), "active": False, "changed": True
    }  # fmt: skip
    after = await store.get(deployment.id)
    assert [s.active for s in after.schedules] == [True, False]
    assert after.paused is False
    left = {r.id for r in await store.runs.list(deployment_id=deployment.id)}
    assert left == {r.id for r in cron_runs}  # the hourly schedule's unstarted runs went
    [paused] = await emitted(redis_client, settings, "tripwire.schedule.paused")
    assert paused.resource["tripwire.resource.id"] == f"tripwire.schedule.{stored.id}"


async def test_pause_schedule_inferred_from_a_run_no_schedule_made_fails(
    runner: ActionRunnerService, firings: Firings, store: DeploymentStore, db: Database
) -> None:
    deployment = await nightly_etl(store)
    by_hand, _ = await store.create_run(deployment.id)
    doc = await fire(firings, {"type": "pause-schedule", "source": "inferred"}, event=event_of(by_hand))

    result = await result_of(db, key_of(doc))
    assert result.status == "failed"
    assert result.reason is not None and "was not created by a schedule" in result.reason
    assert all(s.active for s in (await store.get(deployment.id)).schedules)


async def test_pause_and_resume_a_schedule_selected_by_index(
    runner: ActionRunnerService,
    firings: Firings,
    store: DeploymentStore,
    db: Database,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    deployment = await nightly_etl(store)
    cron_runs = await scheduled_runs(store, deployment, 0, 2)
    await scheduled_runs(store, deployment, 1, 1)

    doc = await fire(firings, {"type": "pause-schedule", "deployment": "nightly-etl", "schedule": 0})
    result = await result_of(db, key_of(doc))
    assert result.status == "succeeded", result.reason
    assert result.detail["schedule"] == "0" and result.detail["changed"] is True
    assert [s.active for s in (await store.get(deployment.id)).schedules] == [False, True]
    left = await store.runs.list(deployment_id=deployment.id)
    assert len(left) == 1 and left[0].schedule_id == deployment.schedules[1].id
    assert not {r.id for r in cron_runs} & {r.id for r in left}
    assert len(await emitted(redis_client, settings, "tripwire.schedule.paused")) == 1

    by_id = {
        "type": "resume-schedule",
        "deployment": "nightly-etl",
        "schedule": str(deployment.schedules[0].id),
    }
    resume = await fire(firings, by_id)
    result = await result_of(db, key_of(resume))
    assert result.status == "succeeded", result.reason
    assert [s.active for s in (await store.get(deployment.id)).schedules] == [True, True]
    assert len(await emitted(redis_client, settings, "tripwire.schedule.resumed")) == 1

    missing = await fire(firings, {"type": "pause-schedule", "deployment": "nightly-etl", "schedule": 7})
    result = await result_of(db, key_of(missing))
    assert result.status == "failed" and result.reason


# --- flow runs ---------------------------------------------------------------------------------------------


async def test_cancel_flow_run_inferred(
    runner: ActionRunnerService,
    firings: Firings,
    store: DeploymentStore,
    db: Database,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    deployment = await nightly_etl(store)
    scheduled, _ = await store.create_run(deployment.id)
    running, _ = await store.create_run(deployment.id)
    await store.runs.transition(running.id, State.PENDING)
    running = await store.runs.transition(running.id, State.RUNNING)

    cancel = {"type": "cancel-flow-run"}
    first = await fire(firings, cancel, event=event_of(scheduled, "Late"))
    second = await fire(firings, cancel, event=event_of(running, "Running"))

    result = await result_of(db, key_of(first))
    assert result.status == "succeeded", result.reason
    assert result.detail == {
        "flow_run": scheduled.name,
        "flow_run_id": str(scheduled.id),
        "state": "Cancelled",
    }
    after = await store.runs.get(scheduled.id)
    assert after.state is State.CANCELLED and after.state_message is not None
    assert after.state_message.startswith("cancelled by automation orchestration")

    result = await result_of(db, key_of(second))
    assert result.status == "succeeded", result.reason
    assert result.detail["state"] == "Cancelling"
    assert (await store.runs.get(running.id)).state is State.CANCELLING
    announced = {
        e.resource["tripwire.resource.id"]
        for e in await emitted(redis_client, settings, "tripwire.flow-run.Cancelled")
    }
    assert announced == {f"tripwire.flow-run.{scheduled.id}"}


async def test_cancel_a_completed_run_fails_naming_its_state(
    runner: ActionRunnerService, firings: Firings, store: DeploymentStore, db: Database
) -> None:
    deployment = await nightly_etl(store)
    run, _ = await store.create_run(deployment.id)
    for state in (State.PENDING, State.RUNNING, State.COMPLETED):
        run = await store.runs.transition(run.id, state)
    doc = await fire(firings, {"type": "cancel-flow-run", "flow_run": str(run.id)})

    result = await result_of(db, key_of(doc))
    assert (result.status, result.attempts) == ("failed", 1)
    assert result.reason is not None and "Completed" in result.reason and str(run.id) in result.reason
    assert (await store.runs.get(run.id)).state is State.COMPLETED


async def test_cancel_a_flow_run_that_does_not_exist_fails(
    runner: ActionRunnerService, firings: Firings, db: Database
) -> None:
    missing, bad = uuid4(), "not-an-id"
    first = await fire(firings, {"type": "cancel-flow-run", "flow_run": str(missing)})
    second = await fire(firings, {"type": "cancel-flow-run", "flow_run": bad})

    result = await result_of(db, key_of(first))
    assert result.status == "failed" and result.reason is not None and str(missing) in result.reason
    result = await result_of(db, key_of(second))
    assert result.status == "failed" and result.reason is not None and "'not-an-id'" in result.reason


async def test_change_flow_run_state_to_failed_with_a_templated_message(
    runner: ActionRunnerService,
    firings: Firings,
    store: DeploymentStore,
    db: Database,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    deployment = await nightly_etl(store)
    run, _ = await store.create_run(deployment.id)
    await store.runs.transition(run.id, State.PENDING)
    run = await store.runs.transition(run.id, State.RUNNING)
    action = {
        "type": "change-flow-run-state",
        "state": "Failed",
        "message": "stopped by {{ automation.name }}: {{ event.resource['tripwire.resource.name'] }} hung",
    }
    doc = await fire(firings, action, event=event_of(run, "Running"))

    result = await result_of(db, key_of(doc))
    assert result.status == "succeeded", result.reason
    assert result.detail["state"] == "Failed"
    after = await store.runs.get(run.id)
    assert after.state is State.FAILED and after.end_time is not None
    assert after.state_message is not None
    assert after.state_message.startswith("stopped by orchestration ")
    assert after.state_message.endswith(f": {run.name} hung")
    [failed] = await emitted(redis_client, settings, "tripwire.flow-run.Failed")
    assert failed.payload["message"] == after.state_message

    back = {"type": "change-flow-run-state", "flow_run": str(run.id), "state": "Running"}
    refused = await fire(firings, back)
    result = await result_of(db, key_of(refused))
    assert result.status == "failed" and result.reason is not None and "Failed" in result.reason
