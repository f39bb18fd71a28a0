"""A GitHub webhook runs an automation: a merged pull request asks for a deployment.

    python examples/github_webhook.py

It runs the whole engine in this process (``tripwire.runner.running``: Redis, the database and every
service) plus the HTTP API on a free port, stores the webhook's secret in an encrypted block, creates a
webhook with GitHub signature checking and a jsonpath template, applies an automation on
``github.pull_request.closed``, then POSTs a ``pull_request`` delivery signed exactly like GitHub does
(``X-Hub-Signature-256``) and one with a wrong signature. The automation's ``emit-event`` action emits
``deploy.requested`` for the merged pull request; the example prints it.

With a real repository: ``tripwire block create secret/github-hook --secret value``, then
``tripwire webhook create github -f github.yaml``, and give GitHub the printed URL and the same secret.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from actions.results import ActionResultStore
from blocks.crypto import Cipher
from blocks.store import BlockStore
from blocks.types import Secret
from events.codec import decode_event
from events.webhooks import WebhookStore, parse_definition, sign_github
from triggers.models import Automation
from triggers.store import AutomationStore
from tripwire.runner import build_server, running
from tripwire.settings import Settings

__all__ = ["AUTOMATION", "WEBHOOK", "main", "run"]

SECRET = "example-github-secret-0123456789"

WEBHOOK = {
    "name": "github",
    "description": "pull request and push deliveries from acme/tripwire",
    "template": {
        "event": "github.{$.headers.x-github-event}.{$.body.action}",
        "resource": {
            "tripwire.resource.id": "github.repo.{$.body.repository.full_name}",
            "tripwire.resource.name": "$.body.repository.name",
        },
        "related": [
            {"tripwire.resource.id": "github.user.{$.body.sender.login}", "tripwire.resource.role": "sender"}
        ],
        "payload": "$.body",
        "id": "$.headers.x-github-delivery",
    },
    "auth": {"type": "github", "secret": "secret/github-hook"},
}

AUTOMATION = Automation.model_validate(
    {
        "name": "deploy merged pull requests",
        "trigger": {
            "type": "event",
            "expect": ["github.pull_request.closed"],
            "match": {"tripwire.resource.id": "github.repo.acme/*"},
        },
        "actions": [
            {
                "type": "emit-event",
                "event": "deploy.requested",
                "resource": {"tripwire.resource.id": "deploy.{{ event.resource['tripwire.resource.name'] }}"},
                "payload": {
                    "pull_request": "{{ event.payload.pull_request.number }}",
                    "title": "{{ event.payload.pull_request.title }}",
                },
            }
        ],
    }
)


def delivery(number: int) -> dict[str, Any]:
    """A GitHub ``pull_request`` delivery body (trimmed): pull request ``number`` merged and closed."""
    return {
        "action": "closed",
        "number": number,
        "pull_request": {"number": number, "title": "Make the nightly ETL idempotent", "merged": True},
        "repository": {"name": "tripwire", "full_name": "acme/tripwire"},
        "sender": {"login": "octocat"},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _post(url: str, body: bytes, secret: str) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign_github(secret, body),
    }
    async with httpx.AsyncClient() as client:
        return await client.post(url, content=body, headers=headers)


async def run(home: Path, timeout_s: float) -> int:
    settings = Settings().model_copy(update={"home": home})
    async with running(settings) as ctx:
        await BlockStore(ctx.db, Cipher.from_settings(settings)).put(
            "secret/github-hook", Secret(value=SecretStr(SECRET))
        )
        hook = await WebhookStore(ctx.db, ctx.redis, settings.streams).create(parse_definition(WEBHOOK))
        stored = (await AutomationStore(ctx.db, ctx.redis, settings.streams).apply(AUTOMATION)).stored
        for service in ctx.services:
            if service.name == "evaluator":
                await service.reload()  # type: ignore[attr-defined]  # now, not at its next poll
        port = _free_port()
        server = build_server(ctx, "127.0.0.1", port, log_level="warning")
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:  # noqa: ASYNC110 - uvicorn has no "started" event
                await asyncio.sleep(0.01)
            url = f"http://127.0.0.1:{port}/hooks/{hook.slug}"
            print(f"webhook {hook.name!r} listens at /hooks/<{len(hook.slug)}-character random slug>")
            body = json.dumps(delivery(42)).encode()
            forged = await _post(url, body, "not-the-secret")
            print(f"wrong signature: {forged.status_code} {forged.json()['detail']}")
            signed = await _post(url, body, SECRET)
            print(f"signed delivery: {signed.status_code}, event id {signed.json()['ids'][0]}")

            results = ActionResultStore(ctx.db)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while not await results.list(stored.id):
                if loop.time() > deadline:
                    print(f"the automation did not act within {timeout_s:g} s")
                    return 1
                await asyncio.sleep(0.05)
            (result,) = await results.list(stored.id)
            print(f"automation {stored.name!r}: action #{result.index} {result.type} {result.status}")
            for _, fields in await ctx.redis.xrange(settings.streams.events):
                event = decode_event(fields[b"data"])
                if event.event.startswith("tripwire."):
                    continue  # the engine's own events (automation triggered, action executed)
                print(f"on the stream: {event.event} {event.resource_id} {json.dumps(event.payload)[:80]}")
        finally:
            server.request_stop()
            await serving
    return 0 if result.status == "succeeded" else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="Tripwire home (default: a temporary directory)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the automation")
    args = parser.parse_args()
    if args.home is not None:
        return asyncio.run(run(args.home, args.timeout))
    with tempfile.TemporaryDirectory(prefix="tripwire-example-") as home:
        return asyncio.run(run(Path(home), args.timeout))


if __name__ == "__main__":
    sys.exit(main())
