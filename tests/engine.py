"""Tripwire processes for end-to-end tests: the engine (``server start``) and single services.

Each runs as a real subprocess on the private Redis (conftest ``redis_server``), a fresh SQLite file and a
unique stream prefix; extra ``TRIPWIRE_*`` settings come in through ``env``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import RedisServer, free_port


def tripwire_env(tmp_path: Path, redis_server: RedisServer, **extra: str) -> dict[str, str]:
    """The environment of a Tripwire process of one test: shared by its engine and its services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    env.update(
        TRIPWIRE_HOME=str(tmp_path / "home"),
        TRIPWIRE_REDIS_URL=redis_server.url,
        TRIPWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'tripwire.db'}",
        TRIPWIRE_STREAMS__PREFIX=f"tw-e2e-{uuid.uuid4().hex[:8]}",
        COLUMNS="200",
        PYTHONUNBUFFERED="1",  # process logs are read by the tests and shown when one fails
    )
    env.update(extra)
    return env


def await_condition(
    check: Callable[[], bool], what: str, timeout_s: float = 30.0, log: Path | None = None
) -> None:
    """Poll ``check`` until it holds (bounded); fail naming ``what`` (and the process log)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s}s" + (f":\n{log.read_text()}" if log else ""))
        time.sleep(0.05)


class ServiceProcess:
    """``python -m tripwire services run NAME...`` with a given environment."""

    def __init__(self, env: dict[str, str], log: Path, *names: str) -> None:
        self.env = env
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tripwire", "services", "run", *names],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: no shutdown, no acknowledgements."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class EngineProcess:
    """``python -m tripwire server start`` on a free port, the private Redis and a fresh SQLite file.

    ``launcher`` replaces ``-m tripwire`` by a script that runs the same command (e.g. the flaky
    deployment example's ``local_slack.py RECEIVER_URL``, which points Slack at a local receiver).
    """

    def __init__(
        self,
        tmp_path: Path,
        redis_server: RedisServer,
        *extra: str,
        env: dict[str, str] | None = None,
        launcher: Sequence[str] = ("-m", "tripwire"),
    ) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.env = dict(env) if env is not None else tripwire_env(tmp_path, redis_server)
        self.env["TRIPWIRE_API_URL"] = self.url
        self.log = tmp_path / "server.log"
        port = self.url.rsplit(":", 1)[1]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *launcher, "server", "start", "--port", port, *extra],
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

    def events_named(self, name: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/events", params={"name": name, "limit": 1000}, timeout=5)
        response.raise_for_status()
        return response.json()["events"]

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
