"""Every program in examples/ runs as-is against a real engine (``tripwire server start`` in a subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, RedisServer, free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]

EXAMPLES = REPO / "examples"


class EngineProcess:
    """``python -m tripwire server start`` on a free port, the private Redis and a fresh SQLite file."""

    def __init__(self, tmp_path: Path, redis_server: RedisServer, *extra: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
        self.env.update(
            TRIPWIRE_HOME=str(tmp_path / "home"),
            TRIPWIRE_REDIS_URL=redis_server.url,
            TRIPWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'tripwire.db'}",
            TRIPWIRE_STREAMS__PREFIX=f"tw-example-{uuid.uuid4().hex[:8]}",
            TRIPWIRE_API_URL=self.url,
            COLUMNS="200",
        )
        self.log = tmp_path / "server.log"
        port = self.url.rsplit(":", 1)[1]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tripwire", "server", "start", "--port", port, *extra],
                env=self.env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._await(self._healthy, "the engine did not answer /health")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the engine exited with {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def _await(self, check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout_s}s:\n{self.log.read_text()}")
            time.sleep(0.1)

    def events(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/api/events", params={"limit": 100}, timeout=5).json()["events"]

    def await_events(self, count: int) -> list[dict[str, Any]]:
        self._await(lambda: len(self.events()) >= count, f"{count} events were not recorded")
        return self.events()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


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
