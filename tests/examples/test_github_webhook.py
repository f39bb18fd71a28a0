"""examples/github_webhook.py runs as-is: a GitHub-signed pull_request delivery over real HTTP (uvicorn)
becomes ``github.pull_request.closed``, an automation on it fires and its action emits an event."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_a_signed_github_delivery_runs_an_automation(tmp_path: Path, redis_server: RedisServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    env.update(
        TRIPWIRE_REDIS_URL=redis_server.url,
        TRIPWIRE_STREAMS__PREFIX=f"tw-example-{uuid.uuid4().hex[:8]}",
        TRIPWIRE_STREAMS__BLOCK_MS="50",
    )
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "github_webhook.py"), "--home", str(tmp_path / "home")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "wrong signature: 401 the X-Hub-Signature-256 signature does not match the body" in out
    assert "signed delivery: 202" in out
    assert "automation 'deploy merged pull requests': action #0 emit-event succeeded" in out
    assert "on the stream: github.pull_request.closed github.repo.acme/tripwire" in out
    assert 'on the stream: deploy.requested deploy.tripwire {"pull_request": "42"' in out
    assert out.count("on the stream: ") == 2  # the forged delivery put nothing on the stream
