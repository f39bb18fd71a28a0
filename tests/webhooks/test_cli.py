"""``tripwire webhook ...`` against a real API server (uvicorn in a thread, real Redis and SQLite)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from blocks import Cipher
from events.webhooks import sign_github
from tests.tripwire.test_cli import ThreadedServer
from tests.tripwire.test_cli_blocks import ok, refused, runner_for
from tests.webhooks.conftest import GITHUB_SECRET, GITHUB_TEMPLATE, github_body, pull_request_closed
from tripwire.settings import Settings

pytestmark = pytest.mark.redis


@pytest.fixture
def api(settings: Settings) -> Iterator[ThreadedServer]:
    keyed = settings.model_copy(update={"encryption_key": SecretStr(Cipher.generate_key())})
    with ThreadedServer(keyed) as server:
        response = httpx.post(
            f"{server.url}/api/blocks",
            json={"type": "secret", "name": "github-hook", "data": {"value": GITHUB_SECRET}},
        )
        assert response.status_code == 201, response.text
        yield server


def test_create_ls_test_inspect_rotate_delete(api: ThreadedServer, tmp_path: Path) -> None:
    cli = runner_for(api.url)
    definition = tmp_path / "github.yaml"
    definition.write_text(
        yaml.safe_dump(
            {"template": GITHUB_TEMPLATE, "auth": {"type": "github", "secret": "secret/github-hook"}}
        )
    )
    out = ok(cli("webhook", "create", "github", "-f", str(definition)))
    assert f"created webhook github: {api.url}/hooks/" in out
    url = out.split(": ", 1)[1].split()[0]

    listed = json.loads(ok(cli("webhook", "ls", "--json")))
    assert [w["name"] for w in listed] == ["github"]
    assert "github (secret/github-hook)" in ok(cli("webhook", "ls"))

    sample = tmp_path / "body.json"
    sample.write_text(json.dumps(pull_request_closed(5)))
    delivery = "5f0c6f5e-2f5c-4c47-9d43-9a9f1f0f0001"
    tested = json.loads(
        ok(cli("webhook", "test", "github", "-f", str(sample), "-H", "X-GitHub-Event: pull_request",
               "-H", f"X-GitHub-Delivery: {delivery}"))
    )  # fmt: skip
    assert tested["event"] == "github.pull_request.closed" and tested["id"] == delivery

    body = github_body()
    headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery}
    good = httpx.post(
        url, content=body, headers={**headers, "X-Hub-Signature-256": sign_github(GITHUB_SECRET, body)}
    )
    bad = httpx.post(url, content=body, headers={**headers, "X-Hub-Signature-256": "sha256=00"})
    assert (good.status_code, bad.status_code) == (202, 401)
    shown = ok(cli("webhook", "inspect", "github"))
    assert "accepted: 1  rejected: 1 (401: 1)" in shown
    assert "the X-Hub-Signature-256 signature does not match the body" in shown
    assert GITHUB_SECRET not in shown and "octocat" not in shown

    rotated = ok(cli("webhook", "rotate", "github"))
    new_url = rotated.split(": ", 1)[1].split()[0]
    assert new_url != url and httpx.post(url, content=body).status_code == 404

    ok(cli("webhook", "disable", "github"))
    assert httpx.post(new_url, content=body).status_code == 404
    ok(cli("webhook", "delete", "github"))
    assert "no webhook named 'github'" in refused(cli("webhook", "inspect", "github"))


def test_a_bad_expression_is_reported_before_sending(api: ThreadedServer, tmp_path: Path) -> None:
    cli = runner_for(api.url)
    definition = tmp_path / "bad.yaml"
    template: dict[str, Any] = {"event": "x.{$.body.a b}", "resource": {"tripwire.resource.id": "y"}}
    definition.write_text(yaml.safe_dump({"template": template}))
    err = refused(cli("webhook", "create", "bad", "-f", str(definition)))
    assert "template.event" in err and "column 4" in err
