"""/api/deployments and /api/flow-runs over HTTP (ASGI transport), real SQL (SQLite, PostgreSQL) and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid4

import httpx
import pytest
import redis.asyncio as aioredis

from events.bus import RedisBus
from events.codec import decode_event
from tripwire.api import create_app
from tripwire.db import Database
from tripwire.orchestration.runs import FlowRunStore
from tripwire.orchestration.states import State
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

BASE = "/api/deployments"
RUNS = "/api/flow-runs"

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"day": {"type": "string", "format": "date"}, "limit": {"type": "integer", "default": 100}},
    "required": ["day"],
}


def a_document(name: str = "nightly-etl", **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "flow_name": "etl",
        "entrypoint": "/srv/flows/etl.py:etl",
        "parameters": {"day": "2026-11-21"},
        "parameter_schema": SCHEMA,
        "tags": ["nightly"],
        "schedules": [{"cron": "0 2 * * *", "timezone": "Europe/Berlin"}, {"interval": 3600}],
        **changes,
    }


@pytest.fixture
async def client(
    settings: Settings, database: Database, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, bus=RedisBus(redis_client, settings.streams), db=database, redis=redis_client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tripwire") as http:
        yield http


def detail(response: httpx.Response) -> dict[str, str]:
    return {d["loc"]: d["msg"] for d in response.json()["detail"]}


async def names_on_stream(redis_client: aioredis.Redis, settings: Settings, prefix: str) -> list[str]:
    entries = await redis_client.xrange(settings.streams.events)
    events = [decode_event(fields[b"data"]) for _, fields in entries]
    return [e.event for e in events if e.event.startswith(prefix)]


# -- deployments --------------------------------------------------------------------------------------------


async def test_apply_is_create_then_unchanged_then_update(client: httpx.AsyncClient) -> None:
    first = await client.post(BASE, json=a_document())
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "created"
    deployment = body["deployment"]
    assert (deployment["version"], deployment["work_pool"], deployment["paused"]) == (1, "default", False)
    assert [s["summary"] for s in deployment["schedules"]] == ["cron 0 2 * * * (Europe/Berlin)", "every 1h"]

    again = await client.post(BASE, json=a_document())
    assert (again.status_code, again.json()["status"]) == (200, "unchanged")
    changed = await client.post(BASE, json=a_document(parameters={"day": "2026-11-22", "limit": 5}))
    assert (changed.status_code, changed.json()["status"]) == (200, "updated")
    assert changed.json()["deployment"]["version"] == 2

    by_name = (await client.get(f"{BASE}/nightly-etl")).json()
    by_id = (await client.get(f"{BASE}/{deployment['id']}")).json()
    assert by_name == by_id and by_name["parameters"] == {"day": "2026-11-22", "limit": 5}
    listed = (await client.get(BASE)).json()["deployments"]
    assert [d["name"] for d in listed] == ["nightly-etl"]


@pytest.mark.parametrize(
    ("changes", "loc", "says"),
    [
        pytest.param({"schedules": [{"cron": "0 9 * * *", "timezone": "Mars/Olympus"}]},
                     "schedules[0].timezone", "unknown time zone", id="bad-zone"),
        pytest.param({"schedules": [{"cron": "0 9 * *"}]}, "schedules[0].cron", "not a valid", id="cron"),
        pytest.param({"schedules": [{"every": 5}]}, "schedules[0]", "exactly one of", id="no-kind"),
        pytest.param({"parameters": {"day": 5}}, "parameters.day", "expected a string, got 5", id="default"),
        pytest.param({"workpool": "x"}, "workpool", "unknown field", id="unknown-field"),
        pytest.param({"entrypoint": "nope"}, "entrypoint", "is not '<file.py or module>:<function>'",
                     id="bad-entrypoint"),
    ],
)  # fmt: skip
async def test_a_bad_document_is_a_422_naming_the_field(
    client: httpx.AsyncClient, changes: dict[str, Any], loc: str, says: str
) -> None:
    for path in (BASE, f"{BASE}/validate"):
        response = await client.post(path, json=a_document(**changes))
        assert response.status_code == 422, response.text
        assert says in detail(response)[loc]
    assert (await client.get(BASE)).json()["deployments"] == []


async def test_validate_and_malformed_json(client: httpx.AsyncClient) -> None:
    valid = await client.post(f"{BASE}/validate", json=a_document())
    assert valid.status_code == 200 and valid.json()["valid"] is True
    assert (await client.get(BASE)).json()["deployments"] == []
    malformed = await client.post(BASE, content=b"{nope", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["detail"][0]["msg"]
    schema = (await client.get("/openapi.json")).json()
    assert "DeploymentSpec" in schema["components"]["schemas"]


async def test_pause_and_resume_a_deployment_and_a_schedule(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings
) -> None:
    created = (await client.post(BASE, json=a_document("team/etl"))).json()["deployment"]
    path = f"{BASE}/{quote('team/etl')}"
    paused = await client.post(f"{path}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["changed"] is True and paused.json()["deployment"]["paused"] is True
    assert (await client.post(f"{path}/pause")).json()["changed"] is False
    assert (await client.post(f"{path}/resume")).json()["deployment"]["paused"] is False

    interval_id = created["schedules"][1]["id"]
    one = await client.post(f"{path}/schedules/{interval_id}/pause")
    assert one.status_code == 200 and one.json()["changed"] is True
    assert [s["schedule"]["active"] for s in one.json()["deployment"]["schedules"]] == [True, False]
    assert (await client.post(f"{path}/schedules/1/resume")).json()["changed"] is True
    missing = await client.post(f"{path}/schedules/7/pause")
    assert missing.status_code == 404 and "has no schedule '7'" in missing.json()["detail"]
    assert (await client.post(f"{BASE}/nope/pause")).status_code == 404

    assert await names_on_stream(redis_client, settings, "tripwire.deployment.") == [
        "tripwire.deployment.paused",
        "tripwire.deployment.resumed",
    ]
    assert await names_on_stream(redis_client, settings, "tripwire.schedule.") == [
        "tripwire.schedule.paused",
        "tripwire.schedule.resumed",
    ]


async def test_run_a_deployment(client: httpx.AsyncClient) -> None:
    deployment = (await client.post(BASE, json=a_document())).json()["deployment"]
    response = await client.post(
        f"{BASE}/nightly-etl/runs",
        json={"parameters": {"limit": 7}, "tags": ["manual"], "idempotency_key": "k-1",
              "scheduled_time": "2026-11-21T09:00:00"},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["parameters"] == {"day": "2026-11-21", "limit": 7}
    assert (run["state"], run["deployment_id"], run["deployment_name"]) == (
        "Scheduled",
        deployment["id"],
        "nightly-etl",
    )
    assert run["tags"] == ["nightly", "manual"] and run["scheduled_time"].startswith("2026-11-21T09:00:00")
    again = await client.post(f"{BASE}/nightly-etl/runs", json={"idempotency_key": "k-1"})
    assert again.status_code == 200 and again.json()["id"] == run["id"]


@pytest.mark.parametrize(
    ("body", "loc", "says"),
    [
        pytest.param({"parameters": {"limit": "bad"}}, "parameters.limit", 'expected an integer, got "bad"',
                     id="wrong-type"),
        pytest.param({"parameters": {"size": 1}}, "parameters.size", "unknown parameter; etl takes day",
                     id="unknown"),
        pytest.param({"parameters": {"day": "21.11.2026"}}, "parameters.day", "expected a date", id="date"),
        pytest.param({"colour": "red"}, "body.colour", "Extra inputs are not permitted", id="unknown-field"),
    ],
)  # fmt: skip
async def test_a_bad_run_is_a_422_naming_the_parameter(
    client: httpx.AsyncClient, body: dict[str, Any], loc: str, says: str
) -> None:
    await client.post(BASE, json=a_document())
    response = await client.post(f"{BASE}/nightly-etl/runs", json=body)
    assert response.status_code == 422, response.text
    assert says in detail(response)[loc]
    assert (await client.get(RUNS)).json()["flow_runs"] == []


async def test_a_missing_required_parameter_is_named(client: httpx.AsyncClient) -> None:
    await client.post(BASE, json=a_document("bare", parameters={}, schedules=[]))
    response = await client.post(f"{BASE}/bare/runs", json={})
    assert response.status_code == 422
    assert "required parameter is missing" in detail(response)["parameters.day"]
    assert (await client.post(f"{BASE}/nope/runs", json={})).status_code == 404


async def test_delete(client: httpx.AsyncClient) -> None:
    await client.post(BASE, json=a_document())
    await client.post(f"{BASE}/nightly-etl/runs", json={})
    assert (await client.delete(f"{BASE}/nightly-etl")).status_code == 204
    assert (await client.get(f"{BASE}/nightly-etl")).status_code == 404
    assert (await client.get(RUNS)).json()["flow_runs"] == []  # its unstarted run went with it
    assert (await client.delete(f"{BASE}/nightly-etl")).status_code == 404


# -- flow runs ----------------------------------------------------------------------------------------------


async def test_list_and_filter_flow_runs(client: httpx.AsyncClient, database: Database) -> None:
    await client.post(BASE, json=a_document())
    await client.post(BASE, json=a_document("other", work_pool="gpu"))
    first = (await client.post(f"{BASE}/nightly-etl/runs", json={})).json()
    second = (await client.post(f"{BASE}/other/runs", json={})).json()
    await FlowRunStore(database, None).claim("gpu", "w1")

    def ids(response: httpx.Response) -> list[str]:
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["flow_runs"]]

    assert set(ids(await client.get(RUNS))) == {first["id"], second["id"]}
    assert ids(await client.get(RUNS, params={"deployment": "nightly-etl"})) == [first["id"]]
    assert ids(await client.get(RUNS, params={"work_pool": "gpu"})) == [second["id"]]
    assert ids(await client.get(RUNS, params={"state": "pending"})) == [second["id"]]
    assert set(ids(await client.get(RUNS, params={"state": "Scheduled,Pending"}))) == {
        first["id"],
        second["id"],
    }
    assert len(ids(await client.get(RUNS, params={"limit": 1}))) == 1
    bad = await client.get(RUNS, params={"state": "Sleeping"})
    assert bad.status_code == 422 and "unknown state 'Sleeping'" in detail(bad)["state"]
    assert (await client.get(RUNS, params={"deployment": "nope"})).status_code == 404
    one = await client.get(f"{RUNS}/{first['id']}")
    assert one.status_code == 200 and one.json()["name"] == first["name"]
    assert (await client.get(f"{RUNS}/{uuid4()}")).status_code == 404
    assert (await client.get(f"{RUNS}/not-an-id")).status_code == 422


async def test_cancel_and_change_state(
    client: httpx.AsyncClient, database: Database, redis_client: aioredis.Redis, settings: Settings
) -> None:
    await client.post(BASE, json=a_document(schedules=[]))
    waiting = (await client.post(f"{BASE}/nightly-etl/runs", json={})).json()
    cancelled = await client.post(f"{RUNS}/{waiting['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "Cancelled"
    final = await client.post(f"{RUNS}/{waiting['id']}/cancel")
    assert final.status_code == 409 and "already Cancelled" in final.json()["detail"]

    running = (await client.post(f"{BASE}/nightly-etl/runs", json={})).json()
    store = FlowRunStore(database, None)
    await store.claim("default", "w1")
    await store.transition(UUID(running["id"]), State.RUNNING)
    stopping = await client.post(f"{RUNS}/{running['id']}/cancel")
    assert stopping.json()["state"] == "Cancelling"  # its worker stops the process

    paused = (await client.post(f"{BASE}/nightly-etl/runs", json={})).json()
    moved = await client.post(f"{RUNS}/{paused['id']}/state", json={"state": "Paused", "message": "hold on"})
    assert moved.status_code == 200 and moved.json()["state"] == "Paused"
    refused = await client.post(f"{RUNS}/{paused['id']}/state", json={"state": "Completed"})
    assert refused.status_code == 409 and "cannot move to Completed" in refused.json()["detail"]
    forced = await client.post(f"{RUNS}/{paused['id']}/state", json={"state": "Completed", "force": True})
    assert forced.status_code == 200 and forced.json()["state"] == "Completed"
    unknown = await client.post(f"{RUNS}/{paused['id']}/state", json={"state": "Done"})
    assert unknown.status_code == 422 and "body.state" in detail(unknown)
    assert "tripwire.flow-run.Cancelling" in await names_on_stream(
        redis_client, settings, "tripwire.flow-run."
    )
