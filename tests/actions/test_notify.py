"""send-notification through apprise's real code paths: Slack (its webhook endpoint pointed at a local HTTP
receiver, TECHNOTES §5) and email (a real aiosmtpd server); apprise failures become clear reasons."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from actions.outcomes import FAILED
from actions.results import ActionResultStore
from actions.runner import ActionRunnerService
from blocks.store import BlockStore
from blocks.types import AppriseUrls, Email, SlackWebhook
from events.bus import RedisBus
from tests.actions.conftest import Firings, failed_run
from tests.actions.receivers import HttpReceiver, SmtpReceiver, body_text
from tests.actions.test_runner import an_automation, emitted, key_of, result_of
from tripwire.db import Database
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

SLACK_URL = "https://hooks.slack.com/services/T0000TEAM/B0000BOT/XXXXslacktoken42"
PASSWORD = "smtp-pw-6e1c9b"


def notify(block: str, **fields: Any) -> dict[str, Any]:
    return {"type": "send-notification", "block": block, **fields}


SUBJECT = "{{ automation.name }}: {{ events | length }} failures"
BODY = "Deployment {{ labels.values() | first }} failed {{ events | length }} times."


async def test_a_slack_message_arrives_through_apprises_slack_plugin(
    runner: ActionRunnerService, firings: Firings, blocks: BlockStore, slack: HttpReceiver, db: Database
) -> None:
    await blocks.put("slack-webhook/data-team", SlackWebhook(url=SecretStr(SLACK_URL)))
    action = notify("slack-webhook/data-team", subject=SUBJECT, body=BODY)
    doc = await firings.fire(await firings.store(an_automation("etl", action)), [failed_run("etl", 1)] * 1)

    result = await result_of(db, key_of(doc))
    assert result.status == "succeeded", result.reason
    assert result.detail["services"] == ["Slack"]
    [request] = slack.received("/slack/services")
    assert request.path == "/slack/services/T0000TEAM/B0000BOT/XXXXslacktoken42"
    message = json.loads(request.body)
    text = json.dumps(message)
    assert "etl: 1 failures" in text
    assert "Deployment etl failed 1 times." in text
    assert "attachments" in message  # Slack's own payload shape


async def test_an_email_arrives_at_a_real_smtp_server(
    runner: ActionRunnerService, firings: Firings, blocks: BlockStore, smtp: SmtpReceiver, db: Database
) -> None:
    email = Email(
        host="127.0.0.1",
        port=smtp.port,
        security="none",
        from_addr="tripwire@example.com",
        to=["oncall@example.com", "data@example.com"],
    )
    await blocks.put("email/oncall", email)
    action = notify("email/oncall", subject=SUBJECT, body=BODY)
    events = [failed_run("etl", i) for i in (1, 2, 3)]
    doc = await firings.fire(await firings.store(an_automation("etl", action)), events)

    result = await result_of(db, key_of(doc))
    assert result.status == "succeeded", result.reason
    mails = smtp.received()
    assert {m["To"] for m in mails} in ({"oncall@example.com", "data@example.com"},
                                        {"oncall@example.com, data@example.com"})  # fmt: skip
    mail = mails[0]
    assert mail["Subject"] == "etl: 3 failures"
    assert "tripwire@example.com" in mail["From"]
    assert "Deployment etl failed 3 times." in body_text(mail)


async def test_an_apprise_block_sends_to_any_apprise_url(
    runner: ActionRunnerService, firings: Firings, blocks: BlockStore, receiver: HttpReceiver, db: Database
) -> None:
    port = receiver.port
    await blocks.put("apprise/pager", AppriseUrls(urls=[SecretStr(f"json://127.0.0.1:{port}/pager")]))
    doc = await firings.fire(await firings.store(an_automation("etl", notify("apprise/pager", body=BODY))))

    assert (await result_of(db, key_of(doc))).status == "succeeded"
    [request] = receiver.received("/pager")
    assert json.loads(request.body)["message"] == "Deployment etl failed 1 times."


async def test_a_failing_slack_endpoint_is_retried_then_dead_lettered_without_the_token(
    runner: ActionRunnerService,
    firings: Firings,
    blocks: BlockStore,
    slack: HttpReceiver,
    db: Database,
    bus: RedisBus,
    redis_client: aioredis.Redis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    slack.default = 500
    await blocks.put("slack-webhook/data-team", SlackWebhook(url=SecretStr(SLACK_URL)))
    doc = await firings.fire(await firings.store(an_automation("etl", notify("slack-webhook/data-team"))))

    result = await result_of(db, key_of(doc))
    assert (result.status, result.attempts) == ("dead-lettered", 3)
    assert result.reason is not None
    assert "apprise could not deliver through 'slack-webhook/data-team'" in result.reason
    assert "Slack: Failed to send to Slack" in result.reason and "error=500" in result.reason
    assert len(slack.received("/slack/services")) == 3
    everything = "\n".join(
        [
            caplog.text,
            (await ActionResultStore(db).get(key_of(doc))).model_dump_json(),  # type: ignore[union-attr]
            *(e.model_dump_json() for e in await emitted(redis_client, settings, FAILED)),
            *(json.dumps(f) for _, f in await bus.dead_letters(settings.streams.actions)),
        ]
    )
    for secret in ("XXXXslacktoken42", "T0000TEAM/B0000BOT"):
        assert secret not in everything


async def test_a_refused_smtp_login_names_the_problem_but_not_the_password(
    runner: ActionRunnerService, firings: Firings, blocks: BlockStore, smtp: SmtpReceiver, db: Database
) -> None:
    email = Email(
        host="127.0.0.1",
        port=smtp.port,
        security="none",
        username="tripwire",
        password=SecretStr(PASSWORD),
        from_addr="tripwire@example.com",
        to=["oncall@example.com"],
    )
    await blocks.put("email/oncall", email)
    doc = await firings.fire(await firings.store(an_automation("etl", notify("email/oncall"))))

    result = await result_of(db, key_of(doc))
    assert result.status == "dead-lettered"  # the test server offers no AUTH: apprise fails every attempt
    assert result.reason is not None and "E-Mail" in result.reason
    assert PASSWORD not in result.reason
    assert smtp.received() == []
