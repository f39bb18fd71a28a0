"""End to end with every service running (``tripwire.runner.running``): blocks and an automation created over
the API, three failures posted to the API, and then a Slack message (apprise's Slack plugin, pointed at a
local receiver), an email (a real SMTP server) and a signed webhook call arrive, each exactly once."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from actions.results import ActionResultStore
from actions.webhook import verify_signature
from events.model import RESOURCE_ROLE
from tests.actions.conftest import eventually
from tests.actions.receivers import HttpReceiver, SmtpReceiver, body_text
from tripwire.api import create_app
from tripwire.runner import running
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

SLACK_URL = "https://hooks.slack.com/services/T0E2E/B0E2E/e2eSlackToken77"
SIGNING = "e2e-signing-5a7c9e"


def failure(run: int) -> dict[str, Any]:
    return {
        "event": "tripwire.flow-run.Failed",
        "resource": {"tripwire.resource.id": f"tripwire.flow-run.{run}"},
        "related": [{"tripwire.resource.id": "tripwire.deployment.etl", RESOURCE_ROLE: "deployment"}],
    }


DEPLOYMENT = "{{ labels['related:deployment:tripwire.resource.id'] }}"
AUTOMATION = {
    "name": "etl keeps failing",
    "trigger": {
        "type": "event",
        "expect": ["tripwire.flow-run.Failed"],
        "match_related": {"tripwire.resource.role": "deployment"},
        "for_each": ["related:deployment:tripwire.resource.id"],
        "threshold": 3,
        "within": 600,
    },
    "actions": [
        {
            "type": "send-notification",
            "block": "slack-webhook/data-team",
            "body": DEPLOYMENT + " failed {{ events | length }} times",
        },
        {
            "type": "send-notification",
            "block": "email/oncall",
            "subject": "[tripwire] {{ automation.name }}",
            "body": DEPLOYMENT + " failed {{ events | length }} times",
        },
        {
            "type": "call-webhook",
            "block": "webhook/ci",
            "payload": {"deployment": DEPLOYMENT},
        },
    ],
}


async def test_three_failures_posted_to_the_api_alert_slack_email_and_a_webhook(
    settings: Settings, slack: HttpReceiver, smtp: SmtpReceiver
) -> None:
    async with running(settings) as ctx:
        app = create_app(ctx.settings, bus=ctx.bus, db=ctx.db, redis=ctx.redis, services=ctx.services)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tw") as api:
            blocks = [
                {"type": "slack-webhook", "name": "data-team", "data": {"url": SLACK_URL}},
                {
                    "type": "email",
                    "name": "oncall",
                    "data": {
                        "host": "127.0.0.1",
                        "port": smtp.port,
                        "security": "none",
                        "from_addr": "tripwire@example.com",
                        "to": ["oncall@example.com"],
                    },
                },
                {
                    "type": "webhook",
                    "name": "ci",
                    "data": {"url": f"{slack.url}/hooks/ci", "signing_secret": SIGNING},
                },
            ]
            for block in blocks:
                assert (await api.post("/api/blocks", json=block)).status_code == 201
            created = await api.post("/api/automations", json=AUTOMATION)
            assert created.status_code == 201, created.text
            [evaluator] = [s for s in ctx.services if s.name == "evaluator"]
            await evaluator.reload()  # type: ignore[attr-defined]  # do not wait for its next poll

            response = await api.post("/api/events", json=[failure(i) for i in (1, 2, 3)])
            assert response.status_code == 202, response.text

            async def all_arrived() -> bool:
                return bool(slack.received("/slack/") and smtp.received() and slack.received("/hooks/ci"))

            await eventually(all_arrived, timeout_s=30)
            [firing] = (await api.get("/api/automations/etl keeps failing/firings")).json()["firings"]

            firing_id = uuid.UUID(firing["id"])

            async def all_recorded() -> bool:
                results = await ActionResultStore(ctx.db).for_firings([firing_id])
                return len(results.get(firing_id, [])) == 3

            await eventually(all_recorded)
            results = (await ActionResultStore(ctx.db).for_firings([firing_id]))[firing_id]
            assert [(r.index, r.type, r.status) for r in results] == [
                (0, "send-notification", "succeeded"),
                (1, "send-notification", "succeeded"),
                (2, "call-webhook", "succeeded"),
            ]
            # ... and the API shows each outcome next to the firing that caused it
            [shown] = (await api.get("/api/automations/etl keeps failing/firings")).json()["firings"]
            assert [(a["type"], a["status"], a["attempts"]) for a in shown["actions"]] == [
                ("send-notification", "succeeded", 1),
                ("send-notification", "succeeded", 1),
                ("call-webhook", "succeeded", 1),
            ]

    [message] = slack.received("/slack/services")
    assert message.path == "/slack/services/T0E2E/B0E2E/e2eSlackToken77"
    assert "tripwire.deployment.etl failed 3 times" in json.dumps(json.loads(message.body))
    [mail] = smtp.received()
    assert mail["Subject"] == "[tripwire] etl keeps failing"
    assert "tripwire.deployment.etl failed 3 times" in body_text(mail)
    [call] = slack.received("/hooks/ci")
    assert json.loads(call.body) == {"deployment": "tripwire.deployment.etl"}
    timestamp, signature = call.headers["X-Tripwire-Timestamp"], call.headers["X-Tripwire-Signature"]
    assert verify_signature(SIGNING, timestamp, call.body, signature)
    headers = call.headers
    assert headers["Idempotency-Key"] == f"{firing['id']}:triggered:2"
