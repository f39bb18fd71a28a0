"""Shared fixtures: a private redis-server per test session, a clean database, settings."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from tripwire.settings import Settings, StreamSettings

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nobody_url() -> Iterator[str]:
    """A Redis URL where nothing answers, for the test's duration: its port is bound, so no server
    started by another test can take it, but not listening, so a connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"redis://127.0.0.1:{s.getsockname()[1]}/0"


class RedisServer:
    """A redis-server child on a free port with its own directory; stopped at the end."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not on PATH: install it (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def stream_settings() -> StreamSettings:
    """Unique key prefix per test, so tests sharing the server never see each other's streams."""
    return StreamSettings(prefix=f"tw-test-{uuid.uuid4().hex[:10]}", block_ms=50, reclaim_idle_ms=500)


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def settings(tmp_path: Path, redis_server: RedisServer, stream_settings: StreamSettings) -> Settings:
    """Settings pointing at the private Redis and a fresh SQLite file."""
    return Settings(
        home=tmp_path / "home",
        redis_url=redis_server.url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'tripwire.db'}",
        streams=stream_settings,
    )


POSTGRES_URL = os.environ.get(
    "TRIPWIRE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
from tests.db_fixtures import *  # noqa
