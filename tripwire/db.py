"""The SQL database: an async engine with safe SQLite settings, and migrations to head on start.

SQLite notes (TECHNOTES §7):
1. Every connection gets WAL, synchronous=NORMAL, foreign_keys=ON, a busy timeout, a larger page cache and
   less frequent checkpoints, and the driver's own implicit transactions are switched off
   (``isolation_level = None``).
2. ``begin()`` issues ``BEGIN IMMEDIATE``: the write lock is taken up front, so read-modify-write
   transactions of several processes queue instead of losing updates or failing with "database is locked".
3. ``read()`` issues a plain (deferred) ``BEGIN``: under WAL readers never wait for the writer.
PostgreSQL: migrations run under a transaction-level advisory lock, so processes starting together on one
database apply them once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import pydantic_core
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Connection, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tripwire.errors import ConfigurationError, ServiceUnavailable

__all__ = ["MIGRATIONS_DIR", "Database", "async_url", "make_engine", "redact_url"]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
MIGRATION_LOCK_KEY = 0x7472_6970_7769_7265 & 0x7FFF_FFFF_FFFF_FFFF  # "tripwire", as a positive bigint
SQLITE_PRAGMAS = (
    "busy_timeout=30000",  # first: switching to WAL needs a lock another process may hold
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    "cache_size=-65536",  # up to 64 MiB of page cache per connection (default 2 MiB)
    "wal_autocheckpoint=10000",  # checkpoint every ~40 MiB of WAL, not 4 MiB: 1.2-1.5x recorder throughput
    "journal_size_limit=67108864",  # and truncate the WAL file back to 64 MiB after a checkpoint
)
READ_ONLY = "tripwire_read_only"  # execution option: deferred BEGIN on SQLite (note 3)
ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}

_PASSWORD_IN_URL = re.compile(r"(?P<head>://[^:/@]*:)[^/]*(?P<tail>@)")


def redact_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (also for strings that do not parse)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return _PASSWORD_IN_URL.sub(r"\g<head>***\g<tail>", url)


def async_url(url: str | URL) -> URL:
    """Parse a database URL, choosing the async driver for plain ``sqlite://`` / ``postgresql://``."""
    parsed = make_url(url)
    if parsed.drivername in ASYNC_DRIVERS:
        parsed = parsed.set(drivername=ASYNC_DRIVERS[parsed.drivername])
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        _pragma(cursor, pragma)
    cursor.close()
    dbapi_connection.isolation_level = None


def _pragma(cursor: Any, pragma: str, wait_s: float = 30.0) -> None:
    """Run one PRAGMA. Switching a new file to WAL can answer "database is locked" at once, without the
    busy timeout, while another connection opens it too (several processes starting together): retried
    for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    delay = 0.01
    while True:
        try:
            cursor.execute(f"PRAGMA {pragma}")
            return
        except Exception as exc:  # the driver's OperationalError (sqlite3, under aiosqlite)
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)  # in the driver's connection thread, not on the event loop
        delay = min(delay * 2, 0.2)


def _on_sqlite_begin(connection: Connection) -> None:
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _to_json(value: Any) -> str:
    return pydantic_core.to_json(value).decode()


def make_engine(url: str | URL, *, connect_timeout_s: float = 10.0, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url``; SQLite connections get the pragmas and BEGIN recipe (notes 1-2).

    JSON columns are written with pydantic's serializer: fast, and it accepts datetimes, UUIDs and models.
    """
    parsed = async_url(url)
    backend = parsed.get_backend_name()
    kwargs.setdefault("json_serializer", _to_json)
    kwargs.setdefault("json_deserializer", pydantic_core.from_json)
    if backend == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 30)
        path = _sqlite_file(parsed)
        if path is not None:
            path.expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        if parsed.get_driver_name() == "asyncpg":
            kwargs.setdefault("connect_args", {}).setdefault("timeout", connect_timeout_s)
    engine = create_async_engine(parsed, **kwargs)
    if backend == "sqlite":
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
    return engine


def _alembic_config(connection: Connection) -> Config:
    config = Config(attributes={"connection": connection})
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(_alembic_config(connection), revision)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        message = str(exc.orig).strip()
        return message.splitlines()[0] if message else type(exc.orig).__name__
    message = str(exc).strip()
    if isinstance(exc, ImportError):
        return f"{message} (Tripwire supports sqlite+aiosqlite:// and postgresql+asyncpg:// URLs)"
    return f"{type(exc).__name__}: {message.splitlines()[0]}" if message else type(exc).__name__


class Database:
    """The SQL database at ``url``: ``start()`` connects and migrates, ``stop()`` closes the pool."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        self._engine_options = engine_options
        self._engine: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None

    def __repr__(self) -> str:
        return f"Database({self.safe_url!r})"

    @property
    def safe_url(self) -> str:
        """The URL without its password, fit for messages and logs."""
        return redact_url(self.url)

    @property
    def engine(self) -> AsyncEngine:
        """The async engine; available after ``start()``."""
        if self._engine is None:
            raise RuntimeError(f"{self!r} is not started: call `await db.start()` first")
        return self._engine

    @property
    def dialect(self) -> str:
        """The backend name: ``sqlite`` or ``postgresql``."""
        if self._engine is not None:
            return self._engine.dialect.name
        try:
            return async_url(self.url).get_backend_name()
        except SQLAlchemyError:
            return "unknown"

    async def start(self, revision: str = "head") -> None:
        """Create the engine, check the database answers, and migrate it to ``revision``."""
        if self._engine is not None:
            return
        try:
            engine = make_engine(self.url, **self._engine_options)
        except (SQLAlchemyError, ValueError, OSError, ImportError) as exc:
            raise ServiceUnavailable(f"cannot use the database at {self.safe_url}: {_reason(exc)}") from exc
        try:
            await self._migrate(engine, revision)
        except CommandError as exc:
            await engine.dispose()
            raise ConfigurationError(
                f"cannot migrate the database at {self.safe_url}: {exc} "
                "(was it created by a newer version of Tripwire?)"
            ) from exc
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            await engine.dispose()
            raise ServiceUnavailable(f"cannot reach the database at {self.safe_url}: {_reason(exc)}") from exc
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine
        self._reader = engine.execution_options(**{READ_ONLY: True})
        log.info("database ready at %s", self.safe_url, extra={"dialect": engine.dialect.name})

    async def _migrate(self, engine: AsyncEngine, revision: str) -> None:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await conn.run_sync(_upgrade, revision)

    async def stop(self) -> None:
        """Close every pooled connection; ``start()`` may be called again."""
        engine, self._engine, self._reader = self._engine, None, None
        if engine is not None:
            await engine.dispose()

    async def __aenter__(self) -> Database:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction that never waits for writers (deferred ``BEGIN`` on SQLite)."""
        if self._reader is None:
            raise RuntimeError(f"{self!r} is not started: call `await db.start()` first")
        async with self._reader.connect() as conn:
            yield conn

    async def ping(self, timeout_s: float = 5.0) -> None:
        """Run ``SELECT 1``; raise ServiceUnavailable naming the URL when the database does not answer."""
        try:
            async with asyncio.timeout(timeout_s), self.read() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            reason = f"no answer within {timeout_s:g} s" if isinstance(exc, TimeoutError) else _reason(exc)
            raise ServiceUnavailable(f"database at {self.safe_url} does not answer: {reason}") from exc
