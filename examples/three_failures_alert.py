"""3 failures of a deployment in 10 minutes -> a Slack alert and an email.

    python examples/three_failures_alert.py

It runs the whole engine in this process (``tripwire.runner.running``: Redis, the database and every
service), stores two credential blocks (a Slack webhook and an SMTP server, encrypted), applies the
automation below, emits three failures of the deployment ``etl``, and prints what Slack and the mail
server received and what the actions recorded.

It needs no Slack workspace and no mail server: it starts a local HTTP server that answers like Slack's
webhook endpoint and points apprise's Slack plugin at it (``NotifySlack.webhook_url``; nothing else of
apprise is changed), and a local SMTP server (aiosmtpd, ``pip install -e ".[test]"``). With a real
workspace, store your own blocks instead (``tripwire block create slack-webhook/data-team``,
``tripwire block create email/oncall``) and apply the same automation with ``tripwire automation apply``.
Redis and the database come from the usual ``TRIPWIRE_*`` settings; the data goes to a temporary
directory unless ``--home`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from apprise.plugins.slack import NotifySlack
from pydantic import SecretStr

from actions.results import ActionResultStore
from blocks.crypto import Cipher
from blocks.store import BlockStore
from blocks.types import Email, SlackWebhook
from events.emit import EventEmitter
from triggers.models import Automation
from triggers.store import AutomationStore
from tripwire.runner import running
from tripwire.settings import Settings

__all__ = ["AUTOMATION", "main", "run"]

DEPLOYMENT = "{{ labels['related:deployment:tripwire.resource.id'] }}"

AUTOMATION = Automation.model_validate(
    {
        "name": "etl keeps failing",
        "description": "3 failures of one deployment in 10 minutes: tell the team on Slack and by email",
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
                "subject": "{{ automation.name }}",
                "body": f":rotating_light: {DEPLOYMENT} failed {{{{ events | length }}}} times in 10 minutes",
            },
            {
                "type": "send-notification",
                "block": "email/oncall",
                "subject": f"[tripwire] {DEPLOYMENT} failed {{{{ events | length }}}} times",
                "body": (
                    f"{DEPLOYMENT} failed {{{{ events | length }}}} times in 10 minutes.\n"
                    "{% for e in events %}- {{ e.resource['tripwire.resource.id'] }} at {{ e.occurred }}\n"
                    "{% endfor %}"
                ),
            },
        ],
    }
)


class SlackReceiver:
    """A local stand-in for https://hooks.slack.com/services: answers "ok" and keeps what it got."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SlackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class MailReceiver:
    """A local SMTP server (aiosmtpd) keeping the mails it gets."""

    def __init__(self) -> None:
        self.mails: list[Any] = []
        self.port = _free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def __enter__(self) -> MailReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def failure(run: int) -> dict[str, Any]:
    return {
        "event": "tripwire.flow-run.Failed",
        "resource": {"tripwire.resource.id": f"tripwire.flow-run.etl-{run}"},
        "related": [
            {"tripwire.resource.id": "tripwire.deployment.etl", "tripwire.resource.role": "deployment"}
        ],
        "payload": {"error": "ValueError: bad input row"},
    }


async def run(home: Path, timeout_s: float) -> int:
    with SlackReceiver() as slack, MailReceiver() as mail:
        NotifySlack.webhook_url = f"{slack.url}/services"  # demo only: Slack's endpoint is our receiver
        settings = Settings().model_copy(update={"home": home})
        async with running(settings) as ctx:
            blocks = BlockStore(ctx.db, Cipher.from_settings(settings))
            slack_url = SecretStr("https://hooks.slack.com/services/T0DEMO/B0DEMO/DemoToken000000000000000")
            await blocks.put("slack-webhook/data-team", SlackWebhook(url=slack_url))
            oncall = Email(
                host="127.0.0.1",
                port=mail.port,
                security="none",
                from_addr="tripwire@example.com",
                to=["oncall@example.com"],
            )
            await blocks.put("email/oncall", oncall)
            stored = (await AutomationStore(ctx.db, ctx.redis, settings.streams).apply(AUTOMATION)).stored
            print(f"applied automation {stored.name!r}")
            for service in ctx.services:
                if service.name == "evaluator":
                    await service.reload()  # type: ignore[attr-defined]  # now, not at its next poll

            emitter = EventEmitter(ctx.bus, settings)
            for i in (1, 2, 3):
                await emitter.emit_event(**failure(i))
            print("emitted 3 failures of tripwire.deployment.etl")

            results = ActionResultStore(ctx.db)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while len(await results.list(stored.id)) < 2:
                if loop.time() > deadline:
                    print(f"the actions did not finish within {timeout_s:g} s")
                    return 1
                await asyncio.sleep(0.1)
            done = await results.list(stored.id)

    for path, body in slack.received:
        print(f"\nSlack received POST {path}:\n  {body.decode()}")
    for message in mail.mails:
        text = message.get_body(preferencelist=("plain",)).get_content().strip()
        print(f"\nMail received for {message['To']}: {message['Subject']}\n  " + text.replace("\n", "\n  "))
    print(
        "\nactions: "
        + ", ".join(f"#{r.index} {r.type} {r.status}" for r in sorted(done, key=lambda r: r.index))
    )
    return 0 if all(r.status == "succeeded" for r in done) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="Tripwire home (default: a temporary directory)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the alerts")
    args = parser.parse_args()
    if args.home is not None:
        return asyncio.run(run(args.home, args.timeout))
    with tempfile.TemporaryDirectory(prefix="tripwire-example-") as home:
        return asyncio.run(run(Path(home), args.timeout))


if __name__ == "__main__":
    sys.exit(main())
