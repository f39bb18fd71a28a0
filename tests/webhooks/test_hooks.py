"""POST /hooks/{slug} over real HTTP (ASGI transport) with real Redis and SQLite: signed requests become
events on the stream; every refusal leaves the stream untouched and is visible in the webhook's failures."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from events.model import RESOURCE_ID
from events.webhooks import sign_github, sign_hmac, sign_slack, sign_stripe
from tests.webhooks.conftest import (
    GITHUB_SECRET,
    GITHUB_TEMPLATE,
    STRIPE_SECRET,
    create_webhook,
    github_body,
    pull_request_closed,
    stream_events,
)
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

STRIPE_TEMPLATE: dict[str, Any] = {
    "event": "stripe.{$.body.type}",
    "resource": {RESOURCE_ID: "stripe.customer.{$.body.data.object.customer}"},
    "payload": "$.body.data.object",
    "id": "$.body.id",
}


def github_headers(body: bytes, secret: str = GITHUB_SECRET, **extra: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign_github(secret, body),
        **extra,
    }


def stripe_body(event_id: str = "evt_1") -> bytes:
    return json.dumps(
        {"id": event_id, "type": "invoice.paid", "data": {"object": {"customer": "cus_9", "amount": 1200}}}
    ).encode()


async def github_hook(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    return await create_webhook(
        client,
        name="github",
        template=GITHUB_TEMPLATE,
        auth={"type": "github", "secret": "secret/github-hook"},
        **extra,
    )


async def inspect(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.get(f"/api/webhooks/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


# -- the GitHub path -----------------------------------------------------------------------------------


async def test_a_github_signed_pull_request_becomes_an_event_on_the_stream(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, keyed: Settings
) -> None:
    hook = await github_hook(client)
    assert len(hook["slug"]) >= 32 and hook["path"] == f"/hooks/{hook['slug']}"
    body = github_body(7)
    headers = github_headers(body)
    response = await client.post(hook["path"], content=body, headers=headers)
    assert response.status_code == 202, response.text
    (event,) = await stream_events(redis_client, keyed)
    assert response.json() == {"accepted": 1, "ids": [str(event.id)]}
    assert event.event == "github.pull_request.closed"
    assert event.resource == {RESOURCE_ID: "github.repo.acme/tripwire", "tripwire.resource.name": "tripwire"}
    assert event.related == [{RESOURCE_ID: "github.user.octocat", "tripwire.resource.role": "sender"}]
    assert event.payload == pull_request_closed(7)
    assert str(event.id) == headers["X-GitHub-Delivery"]  # the delivery id is the dedup key
    assert event.received is not None
    counts = (await inspect(client, "github"))["counts"]
    assert counts["accepted"] == 1 and counts["rejected"] == 0


async def test_a_wrong_github_signature_gets_401_and_no_event(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, keyed: Settings
) -> None:
    hook = await github_hook(client)
    body = github_body()
    response = await client.post(hook["path"], content=body, headers=github_headers(body, "not-the-secret"))
    assert response.status_code == 401
    assert "X-Hub-Signature-256" in response.json()["detail"]
    assert await redis_client.xlen(keyed.streams.events) == 0
    detail = await inspect(client, "github")
    assert detail["counts"]["rejected"] == 1 and detail["counts"]["by_status"] == {"401": 1}
    (failure,) = detail["counts"]["failures"]
    assert failure["status"] == 401 and "does not match" in failure["reason"]
    text = json.dumps(detail)
    assert GITHUB_SECRET not in text and "octocat" not in text  # neither the secret nor the body


# -- Stripe: tolerance and replay ------------------------------------------------------------------------


async def stripe_hook(client: httpx.AsyncClient) -> dict[str, Any]:
    return await create_webhook(
        client,
        name="stripe",
        template=STRIPE_TEMPLATE,
        auth={"type": "stripe", "secret": "secret/stripe-hook", "tolerance_s": 300},
    )


async def test_stripe_signed_request_is_accepted_once_and_a_replay_is_refused(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, keyed: Settings
) -> None:
    hook = await stripe_hook(client)
    body = stripe_body()
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": sign_stripe(STRIPE_SECRET, body, int(time.time())),
    }
    first = await client.post(hook["path"], content=body, headers=headers)
    assert first.status_code == 202, first.text
    replay = await client.post(hook["path"], content=body, headers=headers)
    assert replay.status_code == 401
    assert "replay" in replay.json()["detail"]
    (event,) = await stream_events(redis_client, keyed)
    assert event.event == "stripe.invoice.paid"
    assert event.resource[RESOURCE_ID] == "stripe.customer.cus_9"
    assert event.payload == {"customer": "cus_9", "amount": 1200}


@pytest.mark.parametrize(
    "age_s", [330, -330, 3600], ids=["too-old", "too-far-ahead", "an-hour-old"]
)  # real clock: margin
async def test_stripe_timestamps_outside_the_tolerance_are_refused(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, keyed: Settings, age_s: int
) -> None:
    hook = await stripe_hook(client)
    body = stripe_body()
    signature = sign_stripe(STRIPE_SECRET, body, int(time.time()) - age_s)  # correctly signed, wrong time
    response = await client.post(hook["path"], content=body, headers={"Stripe-Signature": signature})
    assert response.status_code == 401
    assert "tolerance" in response.json()["detail"]
    assert await redis_client.xlen(keyed.streams.events) == 0


async def test_a_stripe_request_refused_by_the_template_does_not_use_up_its_signature(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, keyed: Settings
) -> None:
    hook = await stripe_hook(client)
    body = json.dumps({"id": "evt_2", "type": "x"}).encode()  # no data.object.customer
    headers = {"Stripe-Signature": sign_stripe(STRIPE_SECRET, body, int(time.time()))}
    assert (await client.post(hook["path"], content=body, headers=headers)).status_code == 422
    await client.put(
        "/api/webhooks/stripe",
        json={**{k: v for k, v in hook["definition"].items() if k != "slug"},
              "template": {**STRIPE_TEMPLATE, "defaults": {"$.body.data.object.customer": "unknown",
                                                           "$.body.data.object": {}}}},
    )  # fmt: skip
    again = await client.post(hook["path"], content=body, headers=headers)
    assert again.status_code == 202, again.text
    (event,) = await stream_events(redis_client, keyed)
    assert event.resource[RESOURCE_ID] == "stripe.customer.unknown"


# -- other auth modes and body kinds ---------------------------------------------------------------------


async def test_bearer_hmac_and_slack_auth(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, keyed: Settings
) -> None:
    template = {"event": "ping.{$.body.n}", "resource": {RESOURCE_ID: "pinger"}}
    bearer = await create_webhook(
        client, name="b", template=template, auth={"type": "bearer", "secret": "secret/github-hook"}
    )
    hmac_hook = await create_webhook(
        client, name="h", template=template,
        auth={"type": "hmac", "secret": "secret/github-hook", "header": "X-Sig", "prefix": "hmac ",
              "encoding": "base64"},
    )  # fmt: skip
    slack = await create_webhook(
        client, name="s", template=template, auth={"type": "slack", "secret": "secret/github-hook"}
    )
    body = b'{"n": 1}'
    ok = await client.post(bearer["path"], content=body, headers={"Authorization": f"Bearer {GITHUB_SECRET}"})
    bad = await client.post(bearer["path"], content=body, headers={"Authorization": "Bearer nope"})
    assert (ok.status_code, bad.status_code) == (202, 401)
    sig = sign_hmac(GITHUB_SECRET, body, prefix="hmac ", encoding="base64")
    ok = await client.post(hmac_hook["path"], content=body, headers={"X-Sig": sig})
    bad = await client.post(hmac_hook["path"], content=body, headers={"X-Sig": sig + "x"})
    assert (ok.status_code, bad.status_code) == (202, 401)
    ts = int(time.time())
    slack_headers = {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": sign_slack(GITHUB_SECRET, body, ts),
    }
    ok = await client.post(slack["path"], content=body, headers=slack_headers)
    missing = await client.post(slack["path"], content=body)
    assert (ok.status_code, missing.status_code) == (202, 401)
    assert [e.event for e in await stream_events(redis_client, keyed)] == ["ping.1"] * 3


async def test_form_bodies_get_queries_and_put(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, keyed: Settings
) -> None:
    hook = await create_webhook(
        client,
        name="pinger",
        template={
            "event": "cron.{$.query.job}{$.body.job}",
            "resource": {RESOURCE_ID: "cron.host.{$.headers.x-host}"},
            "payload": {"status": "$.body.status", "method": "$.method"},
            "defaults": {"$.query.job": "", "$.body.job": "", "$.body.status": "ok"},
        },
    )
    path = hook["path"]
    r1 = await client.get(path, params={"job": "backup"}, headers={"X-Host": "db1"})
    r2 = await client.post(path, data={"job": "etl", "status": "failed"}, headers={"X-Host": "db2"})
    r3 = await client.put(path, json={"job": "sync"}, headers={"X-Host": "db3"})
    assert [r.status_code for r in (r1, r2, r3)] == [202, 202, 202], [r.text for r in (r1, r2, r3)]
    events = await stream_events(redis_client, keyed)
    assert [(e.event, e.resource[RESOURCE_ID], e.payload) for e in events] == [
        ("cron.backup", "cron.host.db1", {"status": "ok", "method": "GET"}),
        ("cron.etl", "cron.host.db2", {"status": "failed", "method": "POST"}),
        ("cron.sync", "cron.host.db3", {"status": "ok", "method": "PUT"}),
    ]


async def test_cloudevents_map_without_a_template(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, keyed: Settings
) -> None:
    hook = await create_webhook(client, name="ce")
    ce = {"specversion": "1.0", "id": "1", "source": "ci", "type": "build.done", "data": {"ok": True}}
    structured = await client.post(
        hook["path"], content=json.dumps(ce), headers={"Content-Type": "application/cloudevents+json"}
    )
    batch = await client.post(
        hook["path"],
        content=json.dumps([{**ce, "id": "2"}, {**ce, "id": "3"}]),
        headers={"Content-Type": "application/cloudevents-batch+json"},
    )
    binary = await client.post(
        hook["path"], json={"ok": False},
        headers={"ce-specversion": "1.0", "ce-id": "4", "ce-source": "ci", "ce-type": "build.failed"},
    )  # fmt: skip
    assert [r.status_code for r in (structured, batch, binary)] == [202, 202, 202]
    assert batch.json()["accepted"] == 2
    events = await stream_events(redis_client, keyed)
    assert [e.event for e in events] == ["build.done"] * 3 + ["build.failed"]
    plain = await client.post(hook["path"], json={"not": "a cloudevent"})
    assert plain.status_code == 422 and "only CloudEvents" in plain.text


# -- every refusal, and nothing on the stream ------------------------------------------------------------


REFUSALS = [
    pytest.param(
        {"content": b'{"action": "closed",', "sign": True}, 400, "malformed JSON", id="400-malformed-json"
    ),
    pytest.param(
        {"content": github_body(), "sign": False}, 401, "missing the X-Hub-Signature-256", id="401-unsigned"
    ),
    pytest.param(
        {"content": github_body(), "secret": "wrong"}, 401, "does not match", id="401-bad-signature"
    ),
    pytest.param({"slug": "no-such-hook-slug-000"}, 404, "no webhook", id="404-unknown-slug"),
    pytest.param({"disabled": True}, 404, "no webhook", id="404-disabled"),
    pytest.param({"content": b"{" + b" " * 5000 + b"}"}, 413, "larger than the limit", id="413-too-large"),
    pytest.param(
        {"content": json.dumps({"action": "closed"}).encode()},
        422,
        "$.body.repository.full_name matched nothing",  # and loc names template.resource.<label>
        id="422-missing-path",
    ),
    pytest.param({"content": b"[1, 2]"}, 422, "matched nothing", id="422-body-not-an-object"),
    pytest.param({"rate_limited": True}, 429, "retry in", id="429-rate-limit"),
]


@pytest.mark.parametrize(("case", "status", "reason"), REFUSALS)
async def test_refused_requests_publish_nothing(
    client: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    keyed: Settings,
    case: dict[str, Any],
    status: int,
    reason: str,
) -> None:
    limit = {"rate_limit": {"requests": 1, "per_s": 3600}} if case.get("rate_limited") else {}
    hook = await github_hook(client, max_body_bytes=4096, **limit)
    if case.get("disabled"):
        assert (await client.post("/api/webhooks/github/disable")).status_code == 200
    path = f"/hooks/{case['slug']}" if "slug" in case else hook["path"]
    content = case.get("content", github_body())
    headers = github_headers(content, case.get("secret", GITHUB_SECRET))
    if case.get("sign") is False:
        del headers["X-Hub-Signature-256"]
    if case.get("rate_limited"):
        await redis_client.delete(keyed.streams.events)
        assert (await client.post(path, content=content, headers=headers)).status_code == 202
        await redis_client.delete(keyed.streams.events)
    response = await client.post(path, content=content, headers=headers)
    assert response.status_code == status, response.text
    assert reason in response.text
    assert await redis_client.xlen(keyed.streams.events) == 0
    if status == 429:
        assert 1 <= int(response.headers["Retry-After"]) <= 3600
    counts = (await inspect(client, "github"))["counts"]
    if status == 404:
        assert counts["rejected"] == 0  # a 404 reveals nothing and is not attributed to any webhook
        assert response.json() == {"detail": "no webhook at this address"}
    else:
        assert counts["by_status"] == {str(status): 1}
        assert counts["failures"][0]["status"] == status


# -- management ------------------------------------------------------------------------------------------


async def test_a_bad_expression_is_refused_at_save_time_with_its_position(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/webhooks",
        json={"name": "bad", "template": {"event": "x.{$.body.a b}", "resource": {RESOURCE_ID: "$.body.[?"}}},
    )
    assert response.status_code == 422
    detail = {d["loc"]: d["msg"] for d in response.json()["detail"]}
    assert "column 4" in detail["template.event"] and "'$.body.a b'" in detail["template.event"]
    assert f"template.resource.{RESOURCE_ID}" in detail
    missing_block = await client.post(
        "/api/webhooks",
        json={"name": "nb", "template": GITHUB_TEMPLATE, "auth": {"type": "github", "secret": "secret/nope"}},
    )
    assert missing_block.status_code == 422 and "secret/nope" in missing_block.text
    assert (await client.get("/api/webhooks")).json() == {"webhooks": []}


async def test_rotate_chosen_slug_delete_and_test(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, keyed: Settings
) -> None:
    hook = await github_hook(client, slug="my-github-hook")
    assert hook["path"] == "/hooks/my-github-hook"
    rotated = (await client.post("/api/webhooks/github/rotate")).json()
    assert rotated["slug"] != "my-github-hook"
    body = github_body()
    old = await client.post("/hooks/my-github-hook", content=body, headers=github_headers(body))
    new = await client.post(rotated["path"], content=body, headers=github_headers(body))
    assert (old.status_code, new.status_code) == (404, 202)

    delivery = str(uuid.uuid4())
    sample = {
        "headers": {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery},
        "body": pull_request_closed(3),
    }
    tested = await client.post("/api/webhooks/github/test", json=sample)
    assert tested.status_code == 200, tested.text
    (event,) = tested.json()
    assert event["event"] == "github.pull_request.closed" and event["id"] == delivery
    refused = await client.post("/api/webhooks/github/test", json={"body": {}})
    assert refused.status_code == 422
    assert "template.id" in {d["loc"] for d in refused.json()["detail"]}
    assert await redis_client.xlen(keyed.streams.events) == 1  # test emitted nothing

    assert (await client.delete("/api/webhooks/github")).status_code == 204
    gone = await client.post(rotated["path"], content=body, headers=github_headers(body))
    assert gone.status_code == 404
    assert (await client.get("/api/webhooks/github")).status_code == 404


async def test_hooks_need_no_api_key_but_management_does(
    keyed: Settings, db: Any, redis_client: aioredis.Redis, secrets: Any
) -> None:
    from pydantic import SecretStr

    from events.bus import RedisBus
    from tests.tripwire.test_api_events import asgi_client, make_app

    locked = keyed.model_copy(update={"api_key": SecretStr("k-0123456789")})
    app = make_app(locked, RedisBus(redis_client, locked.streams), db, redis_client)
    async with asgi_client(app) as anon, asgi_client(app, Authorization="Bearer k-0123456789") as admin:
        assert (await anon.get("/api/webhooks")).status_code == 401
        hook = await create_webhook(
            admin, name="open", template={"event": "x", "resource": {RESOURCE_ID: "y"}}
        )
        assert (await anon.post(hook["path"], json={})).status_code == 202
