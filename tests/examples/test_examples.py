"""Every program in examples/ runs as-is against a real engine (``tripwire server start`` in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, RedisServer, free_port
from tests.engine import EngineProcess

pytestmark = [pytest.mark.redis, pytest.mark.slow]

EXAMPLES = REPO / "examples"


@pytest.fixture
def engine(tmp_path: Path, redis_server: RedisServer) -> Iterator[EngineProcess]:
    process = EngineProcess(tmp_path, redis_server)
    yield process
    process.stop()


def _failures_of_etl(events: list[dict]) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["event"] == "tripwire.flow-run.Failed"
        and any(r["tripwire.resource.id"] == "tripwire.deployment.etl" for r in e["related"])
    ]


def test_emit_events_example(engine: EngineProcess) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "emit_events.py"), "--api-url", engine.url],
        env=engine.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "emitted 6 events" in result.stdout
    assert "'etl keeps failing' triggered" in result.stdout  # the example's automation fired
    assert "related:deployment:tripwire.resource.id=tripwire.deployment.etl" in result.stdout

    events = engine.await_events(6)
    assert len(_failures_of_etl(events)) == 3
    assert engine.stop() == 0, engine.log.read_text()
    assert "stopped recorder" in engine.log.read_text()


def test_the_example_says_when_the_api_is_not_there(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "emit_events.py"), "--api-url", url],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot reach the Tripwire API at {url}" in result.stdout


def test_server_start_with_example(tmp_path: Path, redis_server: RedisServer) -> None:
    """The README's first command: the engine starts and the example's events show up."""
    process = EngineProcess(tmp_path, redis_server, "--with-example")
    try:
        events = process.await_events(6)
        assert len(_failures_of_etl(events)) == 3
        ls = subprocess.run(
            [sys.executable, "-m", "tripwire", "events", "ls", "--name", "tripwire.flow-run.Failed"],
            env=process.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert ls.returncode == 0, ls.stderr
        assert ls.stdout.count("tripwire.deployment.etl") == 3
    finally:
        assert process.stop() == 0, process.log.read_text()
