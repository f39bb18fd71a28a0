"""examples/three_failures_alert.py runs as-is: the whole engine in-process, a Slack alert and an email."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_three_failures_send_a_slack_alert_and_an_email(tmp_path: Path, redis_server: RedisServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    env.update(
        TRIPWIRE_REDIS_URL=redis_server.url,
        TRIPWIRE_STREAMS__PREFIX=f"tw-example-{uuid.uuid4().hex[:8]}",
        TRIPWIRE_STREAMS__BLOCK_MS="50",
    )
    example = REPO / "examples" / "three_failures_alert.py"
    result = subprocess.run(
        [sys.executable, str(example), "--home", str(tmp_path / "home")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "emitted 3 failures of tripwire.deployment.etl" in out
    assert "Slack received POST /services/T0DEMO/B0DEMO/" in out
    assert ":rotating_light: tripwire.deployment.etl failed 3 times in 10 minutes" in out
    assert "Mail received for oncall@example.com: [tripwire] tripwire.deployment.etl failed 3 times" in out
    assert out.count("- tripwire.flow-run.etl-") == 3
    assert "actions: #0 send-notification succeeded, #1 send-notification succeeded" in out
