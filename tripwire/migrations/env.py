"""Alembic environment for Tripwire's tables.

At run time ``tripwire.db.Database.start()`` passes an open connection in ``config.attributes["connection"]``
(inside its transaction and, on PostgreSQL, its advisory lock). From the command line
(``alembic -c tripwire/migrations/alembic.ini ...``) the URL is ``-x url=...`` or the ini's
``sqlalchemy.url``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, pool

from tripwire.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _cli_url() -> str | None:
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")


def _run_offline() -> None:
    context.configure(
        url=_cli_url(),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url() -> None:
    from tripwire.db import make_engine

    url = _cli_url()
    if not url:
        raise SystemExit("pass -x url=<database url> or set sqlalchemy.url in the alembic ini file")
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _run_offline()
elif (shared := config.attributes.get("connection")) is not None:
    _run(shared)
else:
    asyncio.run(_run_from_url())
