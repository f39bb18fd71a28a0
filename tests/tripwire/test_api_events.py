"""/api/events over real HTTP (ASGI transport; a real uvicorn server for the live tail), Redis, SQLite.

Accepted events are checked on the stream itself (XRANGE); refused batches must leave it empty.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from events.bus import RedisBus
from events.codec import decode_event
from events.emit import EventEmitter
from events.model import RESOURCE_ID, RESOURCE_ROLE, Event
from events.recorder import Recorder, RecorderService
from tests.conftest import free_port
from tripwire.api import close_live_streams, create_app
from tripwire.api.cloudevents import event_id_for
from tripwire.db import Database
from tripwire.settings import EventLimits, Settings

pytestmark = pytest.mark.redis

API_KEY = "tw-test-key-0123456789"


# -- helpers and fixtures --------------------------------------------------------------------------


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


def an_event(i: int = 0, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": "test.flow-run.Failed",
        "resource": {RESOURCE_ID: f"test.flow-run.{i}", "tripwire.resource.name": f"run {i}"},
        "related": [{RESOURCE_ID: "test.deployment.etl", RESOURCE_ROLE: "deployment"}],
        "payload": {"attempt": i},
    }
    body.update(overrides)
    return body


def a_cloudevent(ce_id: str = "A234-1234-1234", **overrides: Any) -> dict[str, Any]:
    ce: dict[str, Any] = {
        "specversion": "1.0",
        "id": ce_id,
        "source": "https://ci.example.com/pipelines",
        "type": "com.example.build.finished",
        "subject": "pipeline/42",
        "time": "2024-05-01T12:00:00Z",
        "data": {"status": "green"},
    }
    ce.update(overrides)
    return ce


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.effective_database_url)
    await database.start()
    yield database
    await database.stop()


@pytest.fixture
def bus(redis_client: aioredis.Redis, settings: Settings) -> RedisBus:
    return RedisBus(redis_client, settings.streams)


def make_app(settings: Settings, bus: RedisBus, db: Database, redis: aioredis.Redis, **kw: Any) -> FastAPI:
    return create_app(settings, bus=bus, db=db, redis=redis, **kw)


@asynccontextmanager
async def asgi_client(app: FastAPI, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tripwire", headers=headers) as client:
        yield client


@pytest.fixture
async def client(
    settings: Settings, bus: RedisBus, db: Database, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(make_app(settings, bus, db, redis_client)) as c:
        yield c


async def on_stream(redis_client: aioredis.Redis, settings: Settings) -> list[Event]:
    """Every event on the events stream, oldest first (XRANGE)."""
    entries = await redis_client.xrange(settings.streams.events)
    return [decode_event(fields[b"data"]) for _id, fields in entries]


def detail(response: httpx.Response) -> dict[str, str]:
    return {d["loc"]: d["msg"] for d in response.json()["detail"]}


# -- intake: plain events --------------------------------------------------------------------------


async def test_one_event_is_accepted_and_on_the_stream(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings
) -> None:
    event_id = uuid.uuid4()
    response = await client.post("/api/events", json=an_event(id=str(event_id)))
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "ids": [str(event_id)]}
    (stored,) = await on_stream(redis_client, settings)
    assert stored.id == event_id
    assert stored.event == "test.flow-run.Failed"
    assert stored.received is not None


async def test_a_batch_is_accepted_in_order(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings
) -> None:
    response = await client.post("/api/events", json=[an_event(i) for i in range(3)])
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 3
    stored = await on_stream(redis_client, settings)
    assert [str(e.id) for e in stored] == body["ids"]
    assert [e.payload["attempt"] for e in stored] == [0, 1, 2]


async def test_one_bad_event_in_a_batch_leaves_nothing_on_the_stream(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings
) -> None:
    bad = an_event(1, resource={"tripwire.resource.name": "no id"})
    response = await client.post("/api/events", json=[an_event(0), bad, an_event(2)])
    assert response.status_code == 422
    errors = detail(response)
    assert list(errors) == ["events[1].resource"]
    assert "tripwire.resource.id" in errors["events[1].resource"]
    assert await redis_client.exists(settings.streams.events) == 0


@pytest.mark.parametrize(
    ("body", "loc", "fragment"),
    [
        pytest.param(
            [an_event(), an_event(colour="red")], "events[1].colour", "unknown field", id="unknown-field"
        ),
        pytest.param(
            an_event(related=[{RESOURCE_ID: "x"}]),
            "events[0].related",
            "tripwire.resource.role",
            id="no-role",
        ),
        pytest.param(an_event(event=""), "events[0].event", "at least 1", id="empty-name"),
        pytest.param(an_event(occurred="soon"), "events[0].occurred", "datetime", id="bad-time"),
        pytest.param([an_event(), 7], "events[1]", "must be an event object", id="not-an-object"),
        pytest.param([], "body", "no events", id="empty-batch"),
        pytest.param("just a string", "body", "an event object or an array", id="string-body"),
    ],
)
async def test_invalid_events_are_422_naming_index_and_field(
    client: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    settings: Settings,
    body: Any,
    loc: str,
    fragment: str,
) -> None:
    response = await client.post("/api/events", json=body)
    assert response.status_code == 422, response.text
    assert fragment in detail(response)[loc]
    assert await redis_client.exists(settings.streams.events) == 0


async def test_malformed_json_is_400_naming_the_position(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings
) -> None:
    response = await client.post(
        "/api/events",
        content=b'[{"event": "a"},\n {"event": }]',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert detail(response)["body"].startswith("malformed JSON at line 2, column 12")
    assert await redis_client.exists(settings.streams.events) == 0


@pytest.fixture
def small_settings(settings: Settings) -> Settings:
    limits = EventLimits(max_bytes=2048, max_batch=5, max_request_bytes=8192, max_labels=10)
    return settings.model_copy(update={"limits": limits})


@pytest.fixture
async def small_client(
    small_settings: Settings, bus: RedisBus, db: Database, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(make_app(small_settings, bus, db, redis_client)) as c:
        yield c


async def test_an_oversized_event_is_413_and_its_batch_refused(
    small_client: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings
) -> None:
    big = an_event(1, payload={"blob": "x" * 3000})
    response = await small_client.post("/api/events", json=[an_event(0), big])
    assert response.status_code == 413
    (loc,) = detail(response)
    assert loc.startswith("events[1]")
    assert "more than the limit 2048" in detail(response)[loc]
    assert await redis_client.exists(settings.streams.events) == 0


async def test_too_many_labels_is_422_not_413(small_client: httpx.AsyncClient) -> None:
    labels = {RESOURCE_ID: "r", **{f"l{i}": "v" for i in range(20)}}
    response = await small_client.post("/api/events", json=an_event(resource=labels))
    assert response.status_code == 422
    assert "more than the limit 10" in detail(response)["events[0].resource"]


async def test_a_batch_over_the_count_limit_is_413(small_client: httpx.AsyncClient) -> None:
    response = await small_client.post("/api/events", json=[an_event(i) for i in range(6)])
    assert response.status_code == 413
    assert detail(response) == {"body": "has 6 events, more than the limit 5"}


async def test_a_huge_body_is_refused_before_parsing(small_client: httpx.AsyncClient) -> None:
    garbage = b"{" * 10_000  # malformed too: a 413 (not a 400) shows it was never parsed
    response = await small_client.post("/api/events", content=garbage)
    assert response.status_code == 413
    assert "larger than the limit of 8192 bytes" in detail(response)["body"]


async def test_a_huge_chunked_body_is_refused_while_reading(small_client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"[" * 1000

    response = await small_client.post("/api/events", content=chunks())
    assert response.status_code == 413
    assert "larger than the limit of 8192 bytes" in detail(response)["body"]


# -- intake: CloudEvents ---------------------------------------------------------------------------


async def test_structured_cloudevent(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings
) -> None:
    response = await client.post(
        "/api/events",
        content=json.dumps(a_cloudevent(comexampleext="v1")),
        headers={"content-type": "application/cloudevents+json; charset=utf-8"},
    )
    assert response.status_code == 202, response.text
    expected_id = event_id_for("https://ci.example.com/pipelines", "A234-1234-1234")
    assert response.json() == {"accepted": 1, "ids": [str(expected_id)]}
    (stored,) = await on_stream(redis_client, settings)
    assert stored.id == expected_id
    assert stored.event == "com.example.build.finished"
    assert stored.resource[RESOURCE_ID] == "pipeline/42"
    assert stored.resource["cloudevents.source"] == "https://ci.example.com/pipelines"
    assert stored.resource["cloudevents.id"] == "A234-1234-1234"
    assert stored.resource["cloudevents.comexampleext"] == "v1"
    assert stored.payload == {"status": "green"}
    assert stored.occurred.isoformat() == "2024-05-01T12:00:00+00:00"


async def test_a_resent_cloudevent_gets_the_same_id(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/cloudevents+json"}
    first = await client.post("/api/events", content=json.dumps(a_cloudevent()), headers=headers)
    again = await client.post("/api/events", content=json.dumps(a_cloudevent()), headers=headers)
    assert first.json()["ids"] == again.json()["ids"]


async def test_cloudevents_batch(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings
) -> None:
    batch = [a_cloudevent("1"), a_cloudevent("2", data="plain text", subject=None)]
    response = await client.post(
        "/api/events",
        content=json.dumps(batch),
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 2
    first, second = await on_stream(redis_client, settings)
    assert first.resource["cloudevents.id"] == "1"
    assert second.resource[RESOURCE_ID] == "https://ci.example.com/pipelines"  # no subject: the source
    assert second.payload == {"data": "plain text"}


async def test_cloudevents_batch_with_a_bad_member_leaves_nothing(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings
) -> None:
    bad = a_cloudevent("2")
    del bad["type"], bad["source"]
    batch = [a_cloudevent("1"), bad, a_cloudevent("3")]
    response = await client.post(
        "/api/events",
        content=json.dumps(batch),
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 422
    assert detail(response) == {
        "events[1].source": "missing required CloudEvents attribute",
        "events[1].type": "missing required CloudEvents attribute",
    }
    assert await redis_client.exists(settings.streams.events) == 0


async def test_binary_cloudevent(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings
) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "com.example.object.deleted",
        "ce-source": "/storage/eu",
        "ce-id": "42",
        "ce-subject": "bucket%2Fkey",
        "ce-time": "2024-05-01T12:00:00+02:00",
        "ce-tenant": "acme",
        "content-type": "application/json",
    }
    response = await client.post("/api/events", content=b'{"size": 1024}', headers=headers)
    assert response.status_code == 202, response.text
    (stored,) = await on_stream(redis_client, settings)
    assert stored.id == event_id_for("/storage/eu", "42")
    assert stored.event == "com.example.object.deleted"
    assert stored.resource[RESOURCE_ID] == "bucket/key"
    assert stored.resource["cloudevents.tenant"] == "acme"
    assert stored.payload == {"size": 1024}
    assert stored.occurred.isoformat() == "2024-05-01T10:00:00+00:00"


async def test_binary_cloudevent_missing_headers_are_named(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings
) -> None:
    headers = {"ce-specversion": "1.0", "ce-type": "t", "content-type": "text/plain"}
    response = await client.post("/api/events", content=b"hello", headers=headers)
    assert response.status_code == 422
    assert set(detail(response)) == {"headers.ce-id", "headers.ce-source"}
    assert await redis_client.exists(settings.streams.events) == 0


async def test_structured_content_type_wins_over_a_stray_ce_header(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, settings: Settings
) -> None:
    headers = {"content-type": "application/cloudevents+json", "ce-specversion": "1.0"}
    response = await client.post("/api/events", content=json.dumps(a_cloudevent()), headers=headers)
    assert response.status_code == 202, response.text
    (stored,) = await on_stream(redis_client, settings)
    assert stored.payload == {"status": "green"}


async def test_intake_is_503_when_redis_is_down(settings: Settings, db: Database) -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
    try:
        app = make_app(settings, RedisBus(dead, settings.streams), db, dead)
        async with asgi_client(app) as client:
            response = await client.post("/api/events", json=an_event())
        assert response.status_code == 503
        assert response.json() == {"detail": "Redis is unavailable: ConnectionError"}
    finally:
        await dead.aclose()


async def test_an_unexpected_error_is_500_without_details(
    settings: Settings, bus: RedisBus, redis_client: aioredis.Redis
) -> None:
    app = make_app(settings, bus, Database(settings.effective_database_url), redis_client)  # never started
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tripwire") as client:
        response = await client.get("/api/events")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; the server log has the details"}


# -- history ---------------------------------------------------------------------------------------


@pytest.fixture
async def recorded(db: Database) -> list[Event]:
    """Five events in the history: runs 0-4, 0-2 failed, 3-4 completed; run 4 of another deployment."""
    events = [
        Event.model_validate(
            an_event(
                i,
                event="test.flow-run.Failed" if i < 3 else "test.flow-run.Completed",
                occurred=f"2024-05-01T12:00:0{i}Z",
                related=[
                    {
                        RESOURCE_ID: "test.deployment.etl" if i < 4 else "test.deployment.ml",
                        RESOURCE_ROLE: "d",
                    }
                ],
            )
        )
        for i in range(5)
    ]
    await Recorder(db).record(events)
    return events


async def test_history_filters_and_pages(client: httpx.AsyncClient, recorded: list[Event]) -> None:
    response = await client.get("/api/events")
    assert response.status_code == 200
    assert [e["id"] for e in response.json()["events"]] == [str(e.id) for e in reversed(recorded)]

    failed = (await client.get("/api/events", params={"name": "*.Failed"})).json()["events"]
    assert {e["resource"][RESOURCE_ID] for e in failed} == {
        "test.flow-run.0",
        "test.flow-run.1",
        "test.flow-run.2",
    }

    both = await client.get("/api/events", params=[("name", "*.Failed"), ("name", "*.Completed")])
    assert len(both.json()["events"]) == 5

    one = (await client.get("/api/events", params={"resource": "test.flow-run.3"})).json()["events"]
    assert [e["id"] for e in one] == [str(recorded[3].id)]

    ml = (await client.get("/api/events", params={"related": "test.deployment.ml"})).json()["events"]
    assert [e["id"] for e in ml] == [str(recorded[4].id)]

    window = await client.get(
        "/api/events", params={"since": "2024-05-01T12:00:01Z", "until": "2024-05-01T12:00:03Z"}
    )
    assert [e["id"] for e in window.json()["events"]] == [str(e.id) for e in reversed(recorded[1:4])]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/events", params=params)).json()
        assert len(page["events"]) <= 2
        seen += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(e.id) for e in reversed(recorded)]


async def test_history_bad_parameters_are_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/events", params={"since": "last tuesday"})
    assert response.status_code == 422
    assert "query.since" in detail(response)
    response = await client.get("/api/events", params={"limit": 0})
    assert response.status_code == 422
    assert "query.limit" in detail(response)
    response = await client.get("/api/events", params=[("name", "a.*"), ("name", "")])
    assert response.status_code == 422
    assert "is empty" in detail(response)["query.name"]
    response = await client.get("/api/events", params={"cursor": "not-a-cursor"})
    assert response.status_code == 422
    assert "next_cursor" in detail(response)["query.cursor"]
    response = await client.get(
        "/api/events", params={"since": "2024-02-01T00:00:00Z", "until": "2024-01-01"}
    )
    assert response.status_code == 422
    assert "is before since" in detail(response)["query"]


async def test_one_event_by_id(client: httpx.AsyncClient, recorded: list[Event]) -> None:
    response = await client.get(f"/api/events/{recorded[2].id}")
    assert response.status_code == 200
    assert Event.model_validate(response.json()) == recorded[2]

    missing = uuid.uuid4()
    response = await client.get(f"/api/events/{missing}")
    assert response.status_code == 404
    assert response.json() == {"detail": response.json()["detail"]}
    assert f"no event with id {missing}" in response.json()["detail"]


async def test_posted_events_reach_the_history(
    client: httpx.AsyncClient, bus: RedisBus, db: Database, settings: Settings
) -> None:
    recorder = RecorderService(bus, db, settings, consumer="api-test")
    await recorder.start()
    try:
        ids = (await client.post("/api/events", json=[an_event(i) for i in range(3)])).json()["ids"]

        async def all_recorded() -> bool:
            return (await client.get(f"/api/events/{ids[-1]}")).status_code == 200

        await wait_until(all_recorded)
        listed = (await client.get("/api/events", params={"resource": "test.flow-run.*"})).json()["events"]
        assert {e["id"] for e in listed} == set(ids)
    finally:
        await recorder.stop()


# -- auth ------------------------------------------------------------------------------------------


@pytest.fixture
def secured_app(settings: Settings, bus: RedisBus, db: Database, redis_client: aioredis.Redis) -> FastAPI:
    secured = settings.model_copy(update={"api_key": SecretStr(API_KEY)})
    return make_app(secured, bus, db, redis_client)


async def test_auth_required_when_a_key_is_set(
    secured_app: FastAPI, redis_client: aioredis.Redis, settings: Settings
) -> None:
    async with asgi_client(secured_app) as anonymous:
        response = await anonymous.post("/api/events", json=an_event())
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in response.json()["detail"]
    async with asgi_client(secured_app, authorization="Bearer wrong-key") as wrong:
        response = await wrong.post("/api/events", json=an_event())
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert API_KEY not in response.text and "wrong-key" not in response.text
    async with asgi_client(secured_app, authorization="Basic " + API_KEY) as basic:
        assert (await basic.get("/api/events")).status_code == 401
    assert await redis_client.exists(settings.streams.events) == 0
    async with asgi_client(secured_app, authorization=f"Bearer {API_KEY}") as authorised:
        response = await authorised.post("/api/events", json=an_event())
        assert response.status_code == 202
        assert API_KEY not in response.text
        assert (await authorised.get("/api/events")).status_code == 200


def api_requests(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every /api operation, from the OpenAPI schema (path parameters filled in)."""
    for path, operations in app.openapi()["paths"].items():
        if path.startswith("/api"):
            for method in operations:
                yield method.upper(), re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


async def test_every_api_route_is_behind_auth(secured_app: FastAPI) -> None:
    requests = list(api_requests(secured_app))
    assert ("GET", "/api/events/tail") in requests
    async with asgi_client(secured_app) as anonymous:
        for method, path in requests:
            response = await anonymous.request(method, path)
            assert response.status_code == 401, (method, path)
        for open_path in ("/health", "/docs", "/openapi.json"):
            assert (await anonymous.get(open_path)).status_code in (200, 503), open_path


async def test_no_key_means_no_auth(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/events")).status_code == 200


async def test_openapi_documents_the_routes_and_the_bearer_scheme(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {"/api/events", "/api/events/tail", "/api/events/{event_id}", "/health"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["api_key"]["scheme"] == "bearer"
    intake = spec["paths"]["/api/events"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"} <= set(
        intake
    )
    assert "Event" in spec["components"]["schemas"]
    assert (await client.get("/docs")).status_code == 200


# -- live tail through a real uvicorn server -------------------------------------------------------


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[tuple[uvicorn.Server, str]]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws="none", http="h11"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return server.started

    await wait_until(started)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        close_live_streams(app)
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def next_line(lines: AsyncIterator[str], want: Callable[[str], bool]) -> str:
    """The next line satisfying ``want`` (bounded)."""

    async def scan() -> str:
        async for line in lines:
            if want(line):
                return line
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(scan(), 10)


@pytest.fixture
def emitter(bus: RedisBus, settings: Settings) -> EventEmitter:
    return EventEmitter(bus, settings)


async def test_tail_streams_new_events_and_filters(
    settings: Settings, bus: RedisBus, db: Database, redis_client: aioredis.Redis, emitter: EventEmitter
) -> None:
    await emitter.emit_event(**an_event(99, event="test.before.connect"))  # already there: never sent
    app = make_app(settings, bus, db, redis_client)
    async with serving(app) as (_server, url), httpx.AsyncClient(base_url=url, timeout=10) as http:
        params = [("name", "test.flow-run.*"), ("resource", "test.flow-run.1*")]
        async with http.stream("GET", "/api/events/tail", params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            assert await next_line(lines, bool) == ": connected"
            await emitter.emit_event(**an_event(1, event="test.other.Thing"))  # name filtered out
            await emitter.emit_event(**an_event(2))  # resource filtered out
            wanted = await emitter.emit_event(**an_event(12))
            id_line = await next_line(lines, lambda line: line.startswith("id:"))
            data_line = await next_line(lines, lambda line: line.startswith("data:"))
            received = Event.model_validate_json(data_line.removeprefix("data: "))
            assert received.id == wanted.id
            entries = await redis_client.xrange(settings.streams.events)
            assert id_line == f"id: {entries[-1][0].decode()}"


async def test_tail_resumes_after_last_event_id_and_sends_heartbeats(
    settings: Settings, bus: RedisBus, db: Database, redis_client: aioredis.Redis, emitter: EventEmitter
) -> None:
    first = await emitter.emit_event(**an_event(1))
    second = await emitter.emit_event(**an_event(2))
    (first_entry, _second_entry) = await redis_client.xrange(settings.streams.events)
    app = make_app(settings, bus, db, redis_client, tail_heartbeat_s=0.05)
    async with serving(app) as (_server, url), httpx.AsyncClient(base_url=url, timeout=10) as http:
        headers = {"last-event-id": first_entry[0].decode()}
        async with http.stream("GET", "/api/events/tail", headers=headers) as response:
            lines = response.aiter_lines()
            data = await next_line(lines, lambda line: line.startswith("data:"))
            assert Event.model_validate_json(data.removeprefix("data: ")).id == second.id != first.id
            assert await next_line(lines, lambda line: line.startswith(":")) == ": heartbeat"
        bad = await http.get("/api/events/tail", headers={"last-event-id": "yesterday"})
        assert bad.status_code == 422
        assert "headers.last-event-id" in detail(bad)


async def test_tail_ends_when_the_client_disconnects(
    settings: Settings, bus: RedisBus, db: Database, redis_client: aioredis.Redis
) -> None:
    app = make_app(settings, bus, db, redis_client)
    async with serving(app) as (server, url):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            async with http.stream("GET", "/api/events/tail") as response:
                assert await next_line(response.aiter_lines(), bool) == ": connected"
                assert server.server_state.tasks

        async def request_finished() -> bool:
            return not server.server_state.tasks

        await wait_until(request_finished)
        assert not app.state.closing.is_set()


async def test_tail_ends_cleanly_when_the_app_stops(
    settings: Settings, bus: RedisBus, db: Database, redis_client: aioredis.Redis
) -> None:
    app = make_app(settings, bus, db, redis_client)
    async with serving(app) as (server, url), httpx.AsyncClient(base_url=url, timeout=10) as http:
        async with http.stream("GET", "/api/events/tail") as response:
            lines = response.aiter_lines()
            assert await next_line(lines, bool) == ": connected"
            close_live_streams(app)
            server.should_exit = True
            rest = await asyncio.wait_for(_drain(lines), 10)  # the response ends: no hang, no error
            assert all(line.startswith(":") or not line for line in rest)


async def _drain(lines: AsyncIterator[str]) -> list[str]:
    return [line async for line in lines]
