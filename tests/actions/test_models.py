"""Action models: validation at save time (templates with line and message, block kinds, targets), the API's
422 naming the field, and the loop guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from events.bus import RedisBus
from triggers.files import parse_automation
from triggers.models import Automation
from tripwire.api import create_app
from tripwire.db import Database
from tripwire.errors import ValidationFailed
from tripwire.settings import Settings


def automation(
    *actions: dict[str, Any], trigger: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "name": "etl keeps failing",
        "trigger": trigger
        or {"type": "event", "expect": ["tripwire.flow-run.Failed"], "threshold": 3, "within": 600},
        "actions": list(actions),
        **extra,
    }


def refusal(document: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        parse_automation(document)
    return dict(caught.value.errors)


EVERY_ACTION = [
    {"type": "do-nothing"},
    {"type": "send-notification", "block": "slack-webhook/data-team", "body": "{{ automation.name }} fired"},
    {"type": "send-notification", "block": "email/oncall"},
    {
        "type": "call-webhook",
        "block": "webhook/ci",
        "payload": {"text": "{{ labels }}"},
        "headers": {"X-A": "b"},
    },
    {"type": "pause-automation"},
    {"type": "resume-automation", "source": "selected", "automation": "other"},
    {"type": "pause-automation", "source": "inferred"},
    {
        "type": "emit-event",
        "event": "etl.alert.{{ firing.kind }}",
        "resource": {"tripwire.resource.id": "alert.{{ labels.values() | first }}"},
        "payload": '{"n": {{ events | length }}}',
    },
]


def test_every_action_type_validates_and_round_trips() -> None:
    parsed = parse_automation(automation(*EVERY_ACTION))
    assert [a.type for a in parsed.actions] == [a["type"] for a in EVERY_ACTION]
    again = Automation.model_validate(parsed.model_dump(mode="json"))
    assert again == parsed


@pytest.mark.parametrize(
    ("action", "loc", "message"),
    [
        pytest.param(
            {"type": "send-notification", "block": "slack-webhook/x", "body": "Hi {{ automation.name }"},
            "actions[0].body",
            "template syntax error at line 1: unexpected '}'",
            id="syntax-error",
        ),
        pytest.param(
            {
                "type": "send-notification",
                "block": "slack-webhook/x",
                "subject": "ok",
                "body": "a\nb\n{% if x %}",
            },
            "actions[0].body",
            "template syntax error at line 3: Unexpected end of template.",
            id="line-number",
        ),
        pytest.param(
            {"type": "send-notification", "block": "slack-webhook/x", "body": "{{ evnt.id }}"},
            "actions[0].body",
            "template uses unknown variable 'evnt'",
            id="unknown-variable",
        ),
        pytest.param(
            {"type": "call-webhook", "block": "webhook/ci", "payload": {"a": {"b": "{{ x }"}}},
            "actions[0].payload",
            "a.b: template syntax error at line 1",
            id="payload-leaf",
        ),
        pytest.param(
            {"type": "send-notification", "block": "webhook/ci"},
            "actions[0].block",
            "a webhook block cannot send notifications",
            id="not-a-notification-block",
        ),
        pytest.param(
            {"type": "call-webhook", "block": "slack-webhook/x"},
            "actions[0].block",
            "call-webhook needs a webhook block",
            id="not-a-webhook-block",
        ),
        pytest.param(
            {"type": "send-notification", "block": "slack/x"},
            "actions[0].block",
            "no block type 'slack'",
            id="unknown-block-type",
        ),
        pytest.param(
            {"type": "pause-automation", "source": "selected"},
            "actions[0]",
            "source 'selected' needs `automation`",
            id="selected-without-name",
        ),
        pytest.param(
            {"type": "emit-event", "event": "x", "resource": {"name": "y"}},
            "actions[0].resource",
            "needs a non-empty 'tripwire.resource.id' label",
            id="emit-without-resource-id",
        ),
        pytest.param(
            {"type": "call-webhook", "block": "webhook/ci", "headers": {"Idempotency-Key": "x"}},
            "actions[0].headers",
            "Idempotency-Key is set by Tripwire itself",
            id="reserved-header",
        ),
        pytest.param(
            {"type": "send-notification", "block": "email/x", "colour": "red"},
            "actions[0].colour",
            "unknown field",
            id="unknown-field",
        ),
    ],
)
def test_bad_actions_are_refused_naming_the_field(action: dict[str, Any], loc: str, message: str) -> None:
    errors = refusal(automation(action))
    assert loc in errors, errors
    assert message in errors[loc]


# --- the API ---------------------------------------------------------------------------------------------


@pytest.fixture
async def client(
    settings: Settings, tmp_path: Any, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}")
    await db.start()
    app = create_app(settings, bus=RedisBus(redis_client, settings.streams), db=db, redis=redis_client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tripwire") as http:
        yield http
    await db.stop()


@pytest.mark.redis
async def test_the_api_refuses_a_template_that_does_not_compile_with_a_422(client: httpx.AsyncClient) -> None:
    action = {"type": "send-notification", "block": "slack-webhook/x", "body": "ok\n{{ labels[ }}"}
    response = await client.post("/api/automations", json=automation({"type": "do-nothing"}, action))
    assert response.status_code == 422, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"] == "actions[1].body"
    assert detail["msg"].startswith("template syntax error at line 2: unexpected '}'")
    assert (await client.get("/api/automations")).json()["automations"] == []


# --- the loop guard ----------------------------------------------------------------------------------------

EMIT_FAILED = {
    "type": "emit-event",
    "event": "tripwire.flow-run.Failed",
    "resource": {"tripwire.resource.id": "tripwire.flow-run.fake"},
}


def test_an_automation_that_would_trigger_itself_is_refused() -> None:
    trigger = {"type": "event", "expect": ["tripwire.flow-run.*"], "threshold": 1}
    errors = refusal(automation(EMIT_FAILED, trigger=trigger))
    [message] = errors.values()
    assert message.startswith(
        "actions[0]: emit-event 'tripwire.flow-run.Failed' is counted by this automation's"
    )
    assert "without end" in message


@pytest.mark.parametrize(
    ("trigger", "actions", "refused"),
    [
        pytest.param({"expect": ["tripwire.flow-run.Failed"], "threshold": 2}, [EMIT_FAILED], False,
                     id="one-emit-below-threshold"),
        pytest.param({"expect": ["tripwire.flow-run.Failed"], "threshold": 2}, [EMIT_FAILED] * 2, True,
                     id="two-emits-reach-threshold"),
        pytest.param({"expect": ["other.*"]}, [EMIT_FAILED], False, id="not-expected"),
        pytest.param({"expect": ["tripwire.*"], "after": ["tripwire.flow-run.Failed"]}, [EMIT_FAILED], False,
                     id="after-event-arms-only"),
        pytest.param({"expect": ["tripwire.*"], "match": {"tripwire.resource.id": "prod.*"}}, [EMIT_FAILED],
                     False, id="resource-not-matched"),
        pytest.param({"expect": ["tripwire.*"], "match": {"tripwire.resource.id": "tripwire.*"}},
                     [EMIT_FAILED], True, id="resource-matched"),
        pytest.param({"expect": ["tripwire.*"]}, [{**EMIT_FAILED, "event": "{{ 'tripwire.x' }}"}], False,
                     id="templated-name-left-to-runtime"),
        pytest.param({"expect": ["tripwire.*"], "where": {"$.payload.n": 1}}, [EMIT_FAILED], False,
                     id="where-left-to-runtime"),
        pytest.param({"expect": ["tripwire.*"], "posture": "Proactive", "within": 60}, [EMIT_FAILED], False,
                     id="proactive-expect-resolves"),
    ],
)  # fmt: skip
def test_the_loop_guard_refuses_only_certain_loops(
    trigger: dict[str, Any], actions: list[dict[str, Any]], refused: bool
) -> None:
    document = automation(*actions, trigger={"type": "event", **trigger})
    if refused:
        assert refusal(document)
    else:
        parse_automation(document)


def test_the_loop_guard_looks_into_any_compound_and_actions_on_trigger() -> None:
    child = {"type": "event", "expect": ["tripwire.flow-run.Failed"]}
    compound = {"type": "compound", "require": "any", "triggers": [child, {"type": "event", "expect": ["x"]}]}
    assert refusal(automation(trigger=compound, actions_on_trigger=[EMIT_FAILED]))
    parse_automation(automation(trigger={**compound, "require": "all"}, actions_on_trigger=[EMIT_FAILED]))
