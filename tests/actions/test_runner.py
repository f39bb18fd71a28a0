"""The action runner against real Redis, SQLite and a local HTTP receiver: outcomes, retries, dead letters,
idempotency, leases, the loop guard at run time, and what it records and emits."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from actions.emit import emitted_event_id
from actions.outcomes import EXECUTED, FAILED, done_key, outcome_event_id
from actions.results import ActionResult, ActionResultStore
from actions.runner import ActionRunnerService, lease_key
from actions.webhook import verify_signature
from blocks.crypto import Cipher
from blocks.store import BlockStore
from blocks.types import Webhook
from events.bus import RedisBus
from events.codec import decode_event
from events.model import Event
from tests.actions.conftest import Firings, eventually, failed_run
from tests.actions.receivers import HttpReceiver
from tests.conftest import free_port
from triggers.store import AutomationStore
from tripwire.db import Database
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

TOKEN = "tok-3f9a7c1e5b"
SIGNING = "sign-8d2e4f6a0c"
AUTH = "Bearer auth-1b3d5f7a9c"


def an_automation(name: str = "etl keeps failing", *actions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": "3 failures of one deployment in 10 minutes",
        "trigger": {
            "type": "event",
            "expect": ["tripwire.flow-run.Failed"],
            "for_each": ["related:deployment:tripwire.resource.id"],
            "threshold": 3,
            "within": 600,
        },
        "actions": list(actions),
        **extra,
    }


def call_webhook(block: str = "webhook/ci", **fields: Any) -> dict[str, Any]:
    return {"type": "call-webhook", "block": block, **fields}


async def webhook_block(blocks: BlockStore, receiver: HttpReceiver, name: str = "ci", **fields: Any) -> str:
    block = Webhook(
        url=f"{receiver.url}/hooks/{name}?token={TOKEN}",
        secret_headers={"Authorization": SecretStr(AUTH)},
        signing_secret=SecretStr(SIGNING),
        **fields,
    )
    await blocks.put(f"webhook/{name}", block)
    return f"webhook/{name}"


async def result_of(db: Database, key: str) -> ActionResult:
    store = ActionResultStore(db)

    async def done() -> bool:
        return await store.get(key) is not None

    await eventually(done)
    result = await store.get(key)
    assert result is not None
    return result


async def emitted(redis_client: aioredis.Redis, settings: Settings, name: str | None = None) -> list[Event]:
    rows = await redis_client.xrange(settings.streams.events)
    events = [decode_event(fields[b"data"]) for _, fields in rows]
    return [e for e in events if name is None or e.event == name]


def key_of(doc: dict[str, Any], index: int = 0) -> str:
    return f"{doc['id']}:{doc['kind']}:{index}"


# --- call-webhook outcomes ---------------------------------------------------------------------------------


async def test_a_webhook_call_is_signed_and_carries_the_idempotency_key(
    runner: ActionRunnerService,
    firings: Firings,
    blocks: BlockStore,
    receiver: HttpReceiver,
    db: Database,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    ref = await webhook_block(blocks, receiver)
    payload = {
        "text": "{{ automation.name }}: {{ events | length }} failures",
        "deployment": "{{ labels['related:deployment:tripwire.resource.id'] }}",
    }
    automation = await firings.store(an_automation("etl", call_webhook(ref, payload=payload)))
    doc = await firings.fire(automation, [failed_run("etl", i) for i in (1, 2, 3)])

    result = await result_of(db, key_of(doc))
    assert (result.status, result.attempts, result.type) == ("succeeded", 1, "call-webhook")
    assert result.detail["status_code"] == 200
    [request] = receiver.received("/hooks/ci")
    assert request.method == "POST"
    assert json.loads(request.body) == {"text": "etl: 3 failures", "deployment": "etl"}
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == key_of(doc)
    assert request.headers["Authorization"] == AUTH
    timestamp, signature = request.headers["X-Tripwire-Timestamp"], request.headers["X-Tripwire-Signature"]
    assert verify_signature(SIGNING, timestamp, request.body, signature)
    assert not verify_signature(SIGNING, timestamp, request.body + b" ", signature)
    assert not verify_signature("another secret", timestamp, request.body, signature)

    [executed] = await emitted(redis_client, settings, EXECUTED)
    assert executed.id == outcome_event_id(key_of(doc), "succeeded")
    assert executed.resource["tripwire.resource.id"] == f"tripwire.automation.{automation.id}"
    assert executed.payload["status"] == "succeeded"
    assert executed.payload["detail"]["endpoint"] == f"{receiver.url}/…"


async def test_a_text_payload_is_sent_as_text(
    runner: ActionRunnerService, firings: Firings, blocks: BlockStore, receiver: HttpReceiver, db: Database
) -> None:
    ref = await webhook_block(blocks, receiver)
    action = call_webhook(ref, payload="{{ automation.name }} fired for {{ labels.values() | join(',') }}")
    doc = await firings.fire(await firings.store(an_automation("etl", action)))

    assert (await result_of(db, key_of(doc))).status == "succeeded"
    [request] = receiver.received("/hooks/ci")
    assert request.body == b"etl fired for etl"
    assert request.headers["Content-Type"].startswith("text/plain")


async def test_500_twice_then_200_succeeds_on_the_third_attempt(
    runner: ActionRunnerService, firings: Firings, blocks: BlockStore, receiver: HttpReceiver, db: Database
) -> None:
    receiver.answers = [500, 500]
    ref = await webhook_block(blocks, receiver)
    doc = await firings.fire(await firings.store(an_automation("etl", call_webhook(ref))))

    result = await result_of(db, key_of(doc))
    assert (result.status, result.attempts) == ("succeeded", 3)
    requests = receiver.received("/hooks/ci")
    assert len(requests) == 3
    assert {r.headers["Idempotency-Key"] for r in requests} == {key_of(doc)}


async def test_a_receiver_that_always_answers_500_ends_in_the_dead_letter_stream(
    runner: ActionRunnerService,
    firings: Firings,
    blocks: BlockStore,
    receiver: HttpReceiver,
    db: Database,
    bus: RedisBus,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    receiver.default = 500
    ref = await webhook_block(blocks, receiver)
    doc = await firings.fire(await firings.store(an_automation("etl", call_webhook(ref))))

    result = await result_of(db, key_of(doc))
    assert (result.status, result.attempts) == ("dead-lettered", 3)
    assert result.reason is not None
    assert "answered 500 Internal Server Error" in result.reason
    assert TOKEN not in result.reason and "/hooks/" not in result.reason
    assert len(receiver.received("/hooks/ci")) == 3

    [(_, dead)] = await bus.dead_letters(settings.streams.actions)
    assert dead["reason"] == result.reason
    assert dead["idempotency_key"] == key_of(doc)
    assert json.loads(dead["data"])["idempotency_key"] == key_of(doc)
    [failed] = await emitted(redis_client, settings, FAILED)
    assert failed.payload["status"] == "dead-lettered"
    assert failed.payload["reason"] == result.reason


async def test_a_404_fails_at_once_with_the_reason(
    runner: ActionRunnerService,
    firings: Firings,
    blocks: BlockStore,
    receiver: HttpReceiver,
    db: Database,
    bus: RedisBus,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    receiver.default = 404
    ref = await webhook_block(blocks, receiver)
    doc = await firings.fire(await firings.store(an_automation("etl", call_webhook(ref))))

    result = await result_of(db, key_of(doc))
    assert (result.status, result.attempts) == ("failed", 1)
    assert result.reason == f"POST {receiver.url}/… answered 404 Not Found"
    assert len(receiver.received("/hooks/ci")) == 1
    assert await bus.dead_letters(settings.streams.actions) == []
    [failed] = await emitted(redis_client, settings, FAILED)
    assert failed.payload["reason"] == result.reason


async def test_a_refused_connection_is_retried_then_dead_lettered(
    runner: ActionRunnerService, firings: Firings, blocks: BlockStore, db: Database
) -> None:
    await blocks.put("webhook/gone", Webhook(url=f"http://127.0.0.1:{free_port()}/x?token={TOKEN}"))
    doc = await firings.fire(await firings.store(an_automation("etl", call_webhook("webhook/gone"))))

    result = await result_of(db, key_of(doc))
    assert (result.status, result.attempts) == ("dead-lettered", 3)
    assert result.reason is not None and "ConnectError" in result.reason
    assert TOKEN not in result.reason


async def test_a_missing_block_fails_at_once(
    runner: ActionRunnerService, firings: Firings, db: Database
) -> None:
    doc = await firings.fire(await firings.store(an_automation("etl", call_webhook("webhook/nowhere"))))

    result = await result_of(db, key_of(doc))
    assert (result.status, result.attempts) == ("failed", 1)
    assert result.reason == "block 'webhook/nowhere' not found (`tripwire block ls` lists the blocks)"


async def test_a_block_encrypted_with_another_key_fails_with_a_clear_reason(
    make_runner: Callable[..., ActionRunnerService],
    firings: Firings,
    blocks: BlockStore,
    receiver: HttpReceiver,
    db: Database,
) -> None:
    ref = await webhook_block(blocks, receiver)
    doc = await firings.fire(await firings.store(an_automation("etl", call_webhook(ref))))
    async with make_runner(store=BlockStore(db, Cipher.generate())):  # the key was changed
        result = await result_of(db, key_of(doc))
    assert result.status == "failed"
    assert result.reason is not None
    assert result.reason.startswith("block 'webhook/ci' cannot be decrypted with the configured key(s)")
    assert receiver.received() == []


async def test_a_template_that_fails_to_render_fails_with_the_template_error(
    runner: ActionRunnerService, firings: Firings, blocks: BlockStore, receiver: HttpReceiver, db: Database
) -> None:
    ref = await webhook_block(blocks, receiver)
    action = call_webhook(ref, payload={"run": "{{ event.payload.missing }}"})
    doc = await firings.fire(await firings.store(an_automation("etl", action)))

    result = await result_of(db, key_of(doc))
    assert result.status == "failed"
    assert result.reason == "template error in payload.run: 'dict object' has no attribute 'missing'"
    assert receiver.received() == []


# --- idempotency and leases --------------------------------------------------------------------------------


async def test_a_message_delivered_twice_runs_once(
    runner: ActionRunnerService,
    firings: Firings,
    blocks: BlockStore,
    receiver: HttpReceiver,
    db: Database,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    ref = await webhook_block(blocks, receiver)
    doc = await firings.fire(await firings.store(an_automation("etl", call_webhook(ref))))
    await result_of(db, key_of(doc))
    [(_, fields)] = await redis_client.xrange(settings.streams.actions)
    await redis_client.xadd(settings.streams.actions, {"data": fields[b"data"]})  # published again

    async def both_acked() -> bool:
        info = await redis_client.xinfo_groups(settings.streams.actions)
        return info[0]["pending"] == 0 and info[0]["entries-read"] == 2

    await eventually(both_acked)
    assert len(receiver.received("/hooks/ci")) == 1
    assert len(await emitted(redis_client, settings, EXECUTED)) == 1


async def test_two_runners_share_the_stream_and_run_each_action_once(
    make_runner: Callable[..., ActionRunnerService],
    firings: Firings,
    blocks: BlockStore,
    receiver: HttpReceiver,
    db: Database,
) -> None:
    ref = await webhook_block(blocks, receiver)
    automation = await firings.store(an_automation("etl", *[call_webhook(ref)] * 4))
    docs = [await firings.fire(automation) for _ in range(5)]
    async with make_runner("r1"), make_runner("r2"):
        for doc in docs:
            for i in range(4):
                assert (await result_of(db, key_of(doc, i))).status == "succeeded"
    keys = [r.headers["Idempotency-Key"] for r in receiver.received("/hooks/ci")]
    assert sorted(keys) == sorted(key_of(d, i) for d in docs for i in range(4))


async def test_a_message_another_runner_holds_waits_for_its_lease(
    runner: ActionRunnerService,
    firings: Firings,
    blocks: BlockStore,
    receiver: HttpReceiver,
    db: Database,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    ref = await webhook_block(blocks, receiver)
    automation = await firings.store(an_automation("etl", call_webhook(ref)))
    doc = await firings.fire(automation, [])
    lease = lease_key(settings, key_of(doc))
    await redis_client.set(lease, "another runner", px=60_000)

    async def tried() -> bool:
        info = await redis_client.xinfo_groups(settings.streams.actions)
        return info[0]["entries-read"] == 1 and info[0]["pending"] == 1

    await eventually(tried)
    assert receiver.received() == []  # not run while the other runner holds the lease
    await redis_client.delete(lease)  # the other runner died: its lease is gone

    result = await result_of(db, key_of(doc))  # reclaimed after reclaim_idle_ms and run
    assert result.status == "succeeded"
    assert len(receiver.received("/hooks/ci")) == 1
    assert await redis_client.get(done_key(settings, key_of(doc))) == b"succeeded"


async def test_the_lease_is_renewed_while_a_slow_action_runs(
    make_runner: Callable[..., ActionRunnerService],
    firings: Firings,
    blocks: BlockStore,
    receiver: HttpReceiver,
    db: Database,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    receiver.delay_s = 1.0
    ref = await webhook_block(blocks, receiver)
    doc = await firings.fire(await firings.store(an_automation("etl", call_webhook(ref))))
    lease = lease_key(settings, key_of(doc))
    seen: list[int] = []

    async def renewed() -> bool:  # the time left went up: the runner extended its lease
        seen.append(await redis_client.pttl(lease))
        return len(seen) > 1 and seen[-1] > seen[-2] > 0

    async with make_runner(lease_s=0.3):
        await eventually(lambda: _arrived(receiver))
        await eventually(renewed)
        assert (await result_of(db, key_of(doc))).status == "succeeded"
    assert await redis_client.exists(lease) == 0  # released once the outcome was recorded


async def _arrived(receiver: HttpReceiver) -> bool:
    return bool(receiver.received("/hooks/ci"))


async def test_an_entry_that_is_not_an_action_message_is_dead_lettered(
    runner: ActionRunnerService, bus: RedisBus, redis_client: aioredis.Redis, settings: Settings
) -> None:
    await redis_client.xadd(settings.streams.actions, {"data": b'{"nonsense": true}'})

    async def dead() -> bool:
        return bool(await bus.dead_letters(settings.streams.actions))

    await eventually(dead)
    [(_, entry)] = await bus.dead_letters(settings.streams.actions)
    assert entry["reason"].startswith("not an action message")


# --- the other actions ------------------------------------------------------------------------------------


async def test_do_nothing_succeeds(runner: ActionRunnerService, firings: Firings, db: Database) -> None:
    doc = await firings.fire(await firings.store(an_automation("etl", {"type": "do-nothing"})))
    assert (await result_of(db, key_of(doc))).status == "succeeded"


async def test_emit_event_renders_and_emits_once_following_the_triggering_event(
    runner: ActionRunnerService,
    firings: Firings,
    db: Database,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    action = {
        "type": "emit-event",
        "event": "etl.alert.raised",
        "resource": {"tripwire.resource.id": "alert.{{ labels['related:deployment:tripwire.resource.id'] }}"},
        "payload": '{"failures": {{ events | length }}, "automation": {{ automation.name | tojson }}}',
    }
    automation = await firings.store(an_automation("etl", action))
    events = [failed_run("etl", i) for i in (1, 2, 3)]
    doc = await firings.fire(automation, events)

    result = await result_of(db, key_of(doc))
    assert result.status == "succeeded", result.reason
    [alert] = await emitted(redis_client, settings, "etl.alert.raised")
    assert alert.id == emitted_event_id(key_of(doc))
    assert str(alert.id) == result.detail["event_id"]
    assert alert.resource == {"tripwire.resource.id": "alert.etl"}
    assert alert.payload == {"failures": 3, "automation": "etl"}
    assert alert.follows == events[-1].id


async def test_pause_and_resume_automations(
    runner: ActionRunnerService, firings: Firings, automations: AutomationStore, db: Database
) -> None:
    other = await firings.store(an_automation("other"))
    pausing = await firings.store(
        an_automation(
            "pauser",
            {"type": "pause-automation"},
            {"type": "pause-automation", "source": "selected", "automation": "other"},
        )
    )
    doc = await firings.fire(pausing)
    results = [await result_of(db, key_of(doc, i)) for i in (0, 1)]
    assert [r.status for r in results] == ["succeeded", "succeeded"]
    assert results[0].detail == {
        "automation": "pauser", "automation_id": str(pausing.id), "enabled": False, "changed": True,
    }  # fmt: skip
    assert not (await automations.get(pausing.id)).enabled
    assert not (await automations.get(other.id)).enabled

    resume = {"type": "resume-automation", "source": "selected", "automation": str(other.id)}
    resuming = await firings.store(an_automation("resumer", resume))
    doc = await firings.fire(resuming)
    assert (await result_of(db, key_of(doc))).detail["changed"] is True
    assert (await automations.get(other.id)).enabled


async def test_pause_inferred_from_an_event_about_an_automation(
    runner: ActionRunnerService, firings: Firings, automations: AutomationStore, db: Database
) -> None:
    noisy = await firings.store(an_automation("noisy"))
    guard = await firings.store(an_automation("guard", {"type": "pause-automation", "source": "inferred"}))
    about_noisy = Event(
        event="tripwire.automation.action.failed",
        resource={"tripwire.resource.id": f"tripwire.automation.{noisy.id}"},
    )
    doc = await firings.fire(guard, [about_noisy])
    assert (await result_of(db, key_of(doc))).status == "succeeded"
    assert not (await automations.get(noisy.id)).enabled
    assert (await automations.get(guard.id)).enabled

    doc = await firings.fire(guard, [failed_run()])  # not about an automation
    result = await result_of(db, key_of(doc))
    assert result.status == "failed"
    assert result.reason is not None and "is not about an automation" in result.reason


async def test_pausing_an_automation_that_does_not_exist_fails(
    runner: ActionRunnerService, firings: Firings, db: Database
) -> None:
    action = {"type": "pause-automation", "source": "selected", "automation": "nobody"}
    doc = await firings.fire(await firings.store(an_automation("p", action)))
    result = await result_of(db, key_of(doc))
    assert result.status == "failed"
    assert result.reason is not None and "no automation" in result.reason


async def test_on_trigger_and_on_resolve_actions_see_the_lifecycle_event(
    runner: ActionRunnerService, firings: Firings, blocks: BlockStore, receiver: HttpReceiver, db: Database
) -> None:
    ref = await webhook_block(blocks, receiver)
    report = call_webhook(ref, payload="{{ event.event }} {{ firing.kind }}")
    automation = await firings.store(
        an_automation("etl", report, actions_on_trigger=[report], actions_on_resolve=[report])
    )
    fired = await firings.fire(automation)
    resolved = await firings.resolve(automation)
    for key in (key_of(fired, 0), key_of(fired, 1), key_of(resolved, 0)):
        assert (await result_of(db, key)).status == "succeeded"
    bodies = {r.headers["Idempotency-Key"]: r.body.decode() for r in receiver.received("/hooks/ci")}
    assert bodies == {
        key_of(fired, 0): "tripwire.flow-run.Failed triggered",
        key_of(fired, 1): "tripwire.automation.triggered triggered",
        key_of(resolved, 0): "tripwire.automation.resolved resolved",
    }


async def test_the_rate_limit_stops_a_loop_at_run_time(
    make_runner: Callable[..., ActionRunnerService], firings: Firings, db: Database
) -> None:
    action = {"type": "emit-event", "event": "{{ 'etl.again' }}", "resource": {"tripwire.resource.id": "x"}}
    automation = await firings.store(an_automation("looping", action))
    docs = [await firings.fire(automation) for _ in range(3)]
    noon = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)  # one minute for all three, whenever the test runs
    async with make_runner(max_runs_per_minute=2, concurrency=1, clock=lambda: noon):
        results = [await result_of(db, key_of(doc)) for doc in docs]
    assert sorted(r.status for r in results) == ["failed", "succeeded", "succeeded"]
    [refused] = [r for r in results if r.status == "failed"]
    assert refused.reason is not None and refused.reason.startswith("rate limit: possible loop")


# --- secrets ----------------------------------------------------------------------------------------------


async def test_secrets_are_never_in_logs_results_events_or_dead_letters(
    runner: ActionRunnerService,
    firings: Firings,
    blocks: BlockStore,
    receiver: HttpReceiver,
    db: Database,
    bus: RedisBus,
    redis_client: aioredis.Redis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.answers = [500, 404]
    ref = await webhook_block(blocks, receiver)
    automation = await firings.store(an_automation("etl", call_webhook(ref)))
    failed = await firings.fire(automation)
    await result_of(db, key_of(failed))
    receiver.default = 500
    dead = await firings.fire(automation)
    await result_of(db, key_of(dead))

    results = await ActionResultStore(db).list(automation.id)
    assert sorted(r.status for r in results) == ["dead-lettered", "failed"]
    everything = "\n".join(
        [
            caplog.text,
            *(r.model_dump_json() for r in results),
            *(e.model_dump_json() for e in await emitted(redis_client, settings)),
            *(json.dumps(f) for _, f in await bus.dead_letters(settings.streams.actions)),
        ]
    )
    assert "answered 500" in everything and "answered 404" in everything
    for secret in (TOKEN, SIGNING, AUTH, "auth-1b3d5f7a9c"):
        assert secret not in everything
