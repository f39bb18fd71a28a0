"""/api/automations over HTTP (ASGI transport) with real SQL (SQLite and PostgreSQL) and a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis.asyncio as aioredis

from events.bus import RedisBus
from triggers.firings import FiringRow, FiringStore
from triggers.store import AutomationStore
from tripwire.api import create_app
from tripwire.db import Database
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

BASE = "/api/automations"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def a_document(name: str = "etl keeps failing", **trigger: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": "3 failures of one deployment in 10 minutes",
        "trigger": {
            "type": "event",
            "expect": ["tripwire.flow-run.Failed"],
            "match_related": {"tripwire.resource.role": "deployment"},
            "for_each": ["related:deployment:tripwire.resource.id"],
            "threshold": 3,
            "within": 600,
            **trigger,
        },
        "actions": [{"type": "do-nothing"}],
    }


@pytest.fixture
async def client(
    settings: Settings, database: Database, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, bus=RedisBus(redis_client, settings.streams), db=database, redis=redis_client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tripwire") as http:
        yield http


@pytest.fixture
def store(database: Database, redis_client: aioredis.Redis, settings: Settings) -> AutomationStore:
    return AutomationStore(database, redis_client, settings.streams)


def detail(response: httpx.Response) -> dict[str, str]:
    return {d["loc"]: d["msg"] for d in response.json()["detail"]}


# -- create and validate -------------------------------------------------------------------------------


async def test_create_returns_201_and_the_stored_automation(client: httpx.AsyncClient) -> None:
    response = await client.post(BASE, json=a_document())
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["enabled"], body["version"]) == ("etl keeps failing", True, 1)
    assert body["automation"]["trigger"]["threshold"] == 3
    assert body["automation"]["id"] == body["id"]

    fetched = await client.get(f"{BASE}/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == body


async def test_a_taken_name_is_a_422_naming_name(client: httpx.AsyncClient) -> None:
    assert (await client.post(BASE, json=a_document())).status_code == 201
    response = await client.post(BASE, json=a_document(threshold=5))
    assert response.status_code == 422
    assert "already exists" in detail(response)["name"]


@pytest.mark.parametrize(
    ("change", "loc", "says"),
    [
        pytest.param({"bogus": 1}, "trigger.bogus", "unknown field", id="unknown-field"),
        pytest.param({"threshold": 0}, "trigger.threshold", "at least 1", id="threshold-zero"),
        pytest.param(
            {"posture": "Proactive", "within": 5},
            "trigger",
            "within must be at least 10",
            id="proactive-within",
        ),
        pytest.param(
            {"where": {"$.payload[": 1}}, "trigger.where", "not a valid jsonpath", id="bad-jsonpath"
        ),
        pytest.param(
            {"expect": [], "after": [], "match": {}},
            "trigger",
            "would match every event",
            id="matches-itself",
        ),
        pytest.param(
            {"type": "nope"}, "trigger", "does not match any of the expected tags", id="unknown-type"
        ),
    ],
)
async def test_an_invalid_automation_is_a_422_naming_the_field(
    client: httpx.AsyncClient, store: AutomationStore, change: dict[str, Any], loc: str, says: str
) -> None:
    document = a_document(**change)
    for path in (BASE, f"{BASE}/validate"):
        response = await client.post(path, json=document)
        assert response.status_code == 422, response.text
        assert says in detail(response)[loc]
    response = await client.put(f"{BASE}/apply", json=document)
    assert response.status_code == 422
    assert says in detail(response)[loc]
    assert await store.count() == 0
    assert await store.changes_version() == 0


async def test_an_unknown_top_level_field_is_named(client: httpx.AsyncClient) -> None:
    response = await client.post(BASE, json={**a_document(), "enabeld": False})
    assert response.status_code == 422
    assert "unknown field" in detail(response)["enabeld"]


@pytest.mark.parametrize(
    ("body", "status", "loc"),
    [
        pytest.param(b'{"name": ', 400, "body", id="malformed-json"),
        pytest.param(b"[1, 2]", 422, "", id="not-an-object"),
    ],
)
async def test_bodies_that_are_not_automations_are_refused(
    client: httpx.AsyncClient, body: bytes, status: int, loc: str
) -> None:
    response = await client.post(BASE, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert loc in detail(response)


async def test_validate_stores_nothing_and_returns_the_normalised_document(
    client: httpx.AsyncClient, store: AutomationStore
) -> None:
    response = await client.post(f"{BASE}/validate", json=a_document(within="PT10M"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid"] is True
    assert body["automation"]["trigger"]["within"] == 600
    assert await store.count() == 0


# -- apply --------------------------------------------------------------------------------------------


async def test_apply_reports_created_unchanged_updated(
    client: httpx.AsyncClient, store: AutomationStore
) -> None:
    statuses = []
    for document in (a_document(), a_document(), a_document(threshold=4), a_document(threshold=4)):
        response = await client.put(f"{BASE}/apply", json=document)
        assert response.status_code == 200, response.text
        statuses.append((response.json()["status"], response.json()["automation"]["version"]))
    assert statuses == [("created", 1), ("unchanged", 1), ("updated", 2), ("unchanged", 2)]
    assert await store.changes_version() == 2


async def test_apply_all_applies_every_automation_or_none(
    client: httpx.AsyncClient, store: AutomationStore
) -> None:
    body = {"automations": [a_document("a"), a_document("b", threshold=0), a_document("c", bogus=1)]}
    refused = await client.put(f"{BASE}/apply-all", json=body)
    assert refused.status_code == 422
    assert set(detail(refused)) == {"automations[1].trigger.threshold", "automations[2].trigger.bogus"}
    assert await store.count() == 0

    body = {"automations": [a_document("a"), a_document("b")]}
    response = await client.put(f"{BASE}/apply-all", json=body)
    assert response.status_code == 200, response.text
    assert [(r["status"], r["automation"]["name"]) for r in response.json()["results"]] == [
        ("created", "a"),
        ("created", "b"),
    ]
    again = await client.put(f"{BASE}/apply-all", json=body)
    assert [r["status"] for r in again.json()["results"]] == ["unchanged", "unchanged"]


@pytest.mark.parametrize(
    "body",
    [{"automations": []}, {"automations": {}}, [], {"automations": [], "extra": 1}, {"other": []}],
)
async def test_apply_all_needs_a_list_of_automations(client: httpx.AsyncClient, body: Any) -> None:
    response = await client.put(f"{BASE}/apply-all", json=body)
    assert response.status_code == 422
    assert "automations" in detail(response)


# -- list, get, pause, resume, delete ----------------------------------------------------------------------


async def test_list_by_name(client: httpx.AsyncClient) -> None:
    for name in ("b", "a", "c"):
        await client.post(BASE, json=a_document(name))
    response = await client.get(BASE)
    assert response.status_code == 200
    assert [a["name"] for a in response.json()["automations"]] == ["a", "b", "c"]


@pytest.mark.parametrize("name", ["etl keeps failing", "team/etl/failures", "ünïcode ✓", "firings"])
async def test_paths_take_an_id_or_any_name(client: httpx.AsyncClient, name: str) -> None:
    created = (await client.post(BASE, json=a_document(name))).json()
    for ref in (created["id"], name):
        path = f"{BASE}/{quote(ref, safe='')}"
        assert (await client.get(path)).json()["id"] == created["id"]
        paused = await client.post(f"{path}/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["enabled"] is False
        resumed = await client.post(f"{path}/resume")
        assert resumed.json()["enabled"] is True
        firings = await client.get(f"{path}/firings")
        assert firings.status_code == 200, firings.text
        assert firings.json() == {"firings": [], "next_cursor": None}


async def test_pause_and_resume_bump_the_version(client: httpx.AsyncClient, store: AutomationStore) -> None:
    await client.post(BASE, json=a_document())
    paused = (await client.post(f"{BASE}/etl%20keeps%20failing/pause")).json()
    assert (paused["enabled"], paused["version"], paused["automation"]["enabled"]) == (False, 2, False)
    assert (await client.post(f"{BASE}/etl%20keeps%20failing/pause")).json()["version"] == 2
    assert await store.load_enabled() == []
    resumed = (await client.post(f"{BASE}/etl%20keeps%20failing/resume")).json()
    assert (resumed["enabled"], resumed["version"]) == (True, 3)
    assert [a.name for a in await store.load_enabled()] == ["etl keeps failing"]


async def test_delete_then_not_found(client: httpx.AsyncClient) -> None:
    created = (await client.post(BASE, json=a_document())).json()
    response = await client.delete(f"{BASE}/etl%20keeps%20failing")
    assert response.status_code == 204
    assert response.content == b""
    named = "no automation named 'etl keeps failing' (`tripwire automation ls` lists them)"
    for method, path, message in [
        ("GET", f"{BASE}/etl%20keeps%20failing", named),
        ("GET", f"{BASE}/{created['id']}", f"no automation with id or name '{created['id']}'"),
        ("DELETE", f"{BASE}/etl%20keeps%20failing", named),
        ("POST", f"{BASE}/etl%20keeps%20failing/pause", named),
        ("GET", f"{BASE}/etl%20keeps%20failing/firings", named),
    ]:
        missing = await client.request(method, path)
        assert missing.status_code == 404, (method, path)
        assert message in missing.json()["detail"]


# -- firings ------------------------------------------------------------------------------------------


async def test_firings_newest_first_with_a_cursor(client: httpx.AsyncClient, database: Database) -> None:
    created = (await client.post(BASE, json=a_document())).json()
    automation_id = uuid.UUID(created["id"])
    rows = [
        FiringRow(
            id=uuid.uuid4(),
            automation_id=automation_id,
            kind="triggered" if i % 2 == 0 else "resolved",
            labels={"related:deployment:tripwire.resource.id": f"tripwire.deployment.{i}"},
            event_id=uuid.uuid4(),
            occurred=T0 + timedelta(minutes=i),
        )
        for i in range(5)
    ]
    await FiringStore(database).record(rows)

    first = await client.get(f"{BASE}/etl%20keeps%20failing/firings", params={"limit": 3})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [f["id"] for f in page["firings"]] == [str(r.id) for r in reversed(rows[2:])]
    second = await client.get(
        f"{BASE}/{created['id']}/firings", params={"limit": 3, "cursor": page["next_cursor"]}
    )
    assert [f["id"] for f in second.json()["firings"]] == [str(r.id) for r in reversed(rows[:2])]
    assert second.json()["next_cursor"] is None
    assert page["firings"][0]["labels"] == {
        "related:deployment:tripwire.resource.id": "tripwire.deployment.4"
    }

    bad = await client.get(f"{BASE}/{created['id']}/firings", params={"cursor": "nope"})
    assert bad.status_code == 422
    assert "cursor" in detail(bad)
    too_many = await client.get(f"{BASE}/{created['id']}/firings", params={"limit": 100_000})
    assert too_many.status_code == 422


async def test_the_routes_are_documented(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert {"post", "get"} <= set(paths[BASE])
    assert "put" in paths[f"{BASE}/apply"]
    assert "post" in paths[f"{BASE}/validate"]
    body = paths[BASE]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Automation"}
    assert "Automation" in spec["components"]["schemas"]
