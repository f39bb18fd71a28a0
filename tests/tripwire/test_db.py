"""Database: engine settings, migrations (idempotent, concurrent, matching tables.py), errors, ping."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import URL

from tripwire.db import MIGRATIONS_DIR, Database, async_url, redact_url
from tripwire.errors import ServiceUnavailable
from tripwire.tables import metadata


def head_revision() -> str:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def tables_and_version(db: Database) -> tuple[set[str], str]:
    async with db.read() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    return names, version


async def test_start_creates_every_table_at_head(empty_database_url: str) -> None:
    async with Database(empty_database_url) as db:
        names, version = await tables_and_version(db)
    assert {t.name for t in metadata.sorted_tables} | {"alembic_version"} == names
    assert version == head_revision()


async def test_starting_again_is_harmless(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    await db.start()
    await db.start()  # already started: nothing happens
    await db.stop()
    async with Database(empty_database_url) as again:  # a later process: migrations find nothing to do
        names, version = await tables_and_version(again)
    assert "events" in names
    assert version == head_revision()


async def test_concurrent_starts_migrate_once(empty_database_url: str) -> None:
    dbs = [Database(empty_database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(db.start() for db in dbs))
        names, version = await tables_and_version(dbs[0])
    finally:
        await asyncio.gather(*(db.stop() for db in dbs))
    assert "events" in names
    assert version == head_revision()


def _diff(conn: Connection) -> list[object]:
    return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)


async def test_migrations_build_exactly_the_declared_tables(database: Database) -> None:
    async with database.read() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []


async def test_sqlite_connections_are_configured(tmp_path: Path) -> None:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'a' / 'b' / 'tw.db'}") as db:
        assert (tmp_path / "a" / "b" / "tw.db").exists()  # parent directories created
        async with db.read() as conn:
            pragmas = {
                p: (await conn.exec_driver_sql(f"PRAGMA {p}")).scalar()
                for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": 30000}


async def test_sqlite_write_transactions_do_not_lose_updates(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: concurrent read-modify-write transactions queue instead of overwriting each other."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'tw.db'}", pool_size=8) as db:
        async with db.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE counter (n INTEGER NOT NULL)")
            await conn.exec_driver_sql("INSERT INTO counter VALUES (0)")

        async def increment() -> None:
            async with db.begin() as conn:
                n = (await conn.exec_driver_sql("SELECT n FROM counter")).scalar_one()
                await asyncio.sleep(0)  # let the other tasks try to interleave
                await conn.exec_driver_sql("UPDATE counter SET n = ?", (n + 1,))

        await asyncio.gather(*(increment() for _ in range(20)))
        async with db.read() as conn:
            assert (await conn.exec_driver_sql("SELECT n FROM counter")).scalar_one() == 20


async def test_sqlite_readers_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'tw.db'}") as db:
        async with db.begin() as writer:
            await writer.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        async with db.begin() as writer:
            await writer.exec_driver_sql("INSERT INTO t VALUES (1)")
            async with asyncio.timeout(5), db.read() as reader:  # a write lock would make this wait 30 s
                assert (await reader.exec_driver_sql("SELECT count(*) FROM t")).scalar_one() == 0


async def test_ping(database: Database) -> None:
    await database.ping()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+asyncpg://tw:s3cret@127.0.0.1:1/tripwire", id="refused"),
        pytest.param("postgresql://tw:s3cret@no-such-host.invalid/tripwire", id="unknown-host"),
        pytest.param("nosuchdb://tw:s3cret@host/tripwire", id="unknown-dialect"),
        pytest.param("not a url, s3cret", id="unparsable"),
    ],
)
async def test_unusable_database_is_service_unavailable_without_the_password(url: str) -> None:
    db = Database(url)
    with pytest.raises(ServiceUnavailable) as info:
        await db.start()
    message = str(info.value)
    assert "database" in message
    if "://" in url:
        assert redact_url(url) in message
        assert "s3cret" not in message
    with pytest.raises(RuntimeError, match="not started"):
        _ = db.engine


@pytest.mark.postgres
async def test_missing_postgres_database_is_named(postgres_admin_url: URL) -> None:
    url = postgres_admin_url.set(drivername="postgresql+asyncpg", database="tripwire_no_such_db")
    with pytest.raises(ServiceUnavailable, match="tripwire_no_such_db"):
        await Database(url.render_as_string(hide_password=False)).start()


async def test_ping_after_stop_says_not_started(tmp_path: Path) -> None:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'tw.db'}") as db:
        await db.ping()
    with pytest.raises(RuntimeError, match="not started"):
        await db.ping()


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql+asyncpg://u:pw@h:5432/d", "postgresql+asyncpg://u:***@h:5432/d"),
        ("postgresql://u@h/d", "postgresql://u@h/d"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
        ("garbage://u:p@ss@h/d", "garbage://u:***@h/d"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://h/d", "postgresql+asyncpg"),
        ("postgres://h/d", "postgresql+asyncpg"),
        ("postgresql+asyncpg://h/d", "postgresql+asyncpg"),
    ],
)
def test_plain_urls_get_the_async_driver(url: str, driver: str) -> None:
    assert async_url(url).drivername == driver


def test_migrations_are_package_data() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert any(MIGRATIONS_DIR.joinpath("versions").glob("0001_*.py"))
