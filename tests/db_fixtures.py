"""Database fixtures: ``database`` runs a test on a fresh SQLite file and on PostgreSQL.

PostgreSQL (``POSTGRES_URL`` from conftest, ``TRIPWIRE_TEST_POSTGRES_URL`` to override): one uniquely named
database per test session, created through the ``postgres`` maintenance database and dropped at the end;
every test starts with empty tables. Tests on it carry the ``postgres`` marker (``-m "not postgres"`` to
skip them). When no server answers they fail, naming the URL (set TRIPWIRE_TEST_POSTGRES_URL, or
deselect them explicitly): a missing database must never pass as skipped tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from tripwire.db import Database
from tripwire.tables import metadata

__all__ = [
    "DATABASE_KINDS",
    "database",
    "empty_database_url",
    "postgres_admin_url",
    "postgres_session_url",
    "run_async",
]

T = TypeVar("T")

DATABASE_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine function to completion on its own loop in a worker thread (for sync fixtures)."""

    async def main() -> T:
        return await fn()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def _dsn(url: URL, database: str | None = None) -> str:
    url = url.set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def _admin(url: URL, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(_dsn(url), timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_async(go)


def _create_database(admin: URL) -> URL:
    name = f"tripwire_test_{uuid.uuid4().hex[:12]}"
    _admin(admin, f'CREATE DATABASE "{name}"')
    return admin.set(drivername="postgresql+asyncpg", database=name)


def _drop_database(admin: URL, url: URL) -> None:
    _admin(admin, f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_admin_url() -> URL:
    """The maintenance (``postgres``) database of the test server; fails clearly when none answers."""
    from tests.conftest import POSTGRES_URL

    admin = make_url(POSTGRES_URL).set(database="postgres")
    try:
        _admin(admin, "SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(
            f"no PostgreSQL at {admin.render_as_string(hide_password=True)} ({exc}): "
            "set TRIPWIRE_TEST_POSTGRES_URL, or deselect with -m 'not postgres'"
        )
    return admin


@pytest.fixture(scope="session")
def postgres_session_url(postgres_admin_url: URL) -> Iterator[URL]:
    """A database created for this test session, dropped at its end."""
    url = _create_database(postgres_admin_url)
    yield url
    _drop_database(postgres_admin_url, url)


@pytest.fixture(params=DATABASE_KINDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database with nothing in it: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty' / 'tripwire.db'}"
        return
    admin: URL = request.getfixturevalue("postgres_admin_url")
    url = _create_database(admin)
    yield url.render_as_string(hide_password=False)
    _drop_database(admin, url)


async def _truncate_all(db: Database) -> None:
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    async with db.begin() as conn:
        await conn.execute(text(f"TRUNCATE TABLE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=DATABASE_KINDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A started, migrated, empty Database: a fresh SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tripwire.db'}"
    else:
        session_url: URL = request.getfixturevalue("postgres_session_url")
        url = session_url.render_as_string(hide_password=False)
    db = Database(url)
    await db.start()
    if db.dialect == "postgresql":
        await _truncate_all(db)
    try:
        yield db
    finally:
        await db.stop()
