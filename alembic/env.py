"""Alembic environment: async, on asyncpg.

The URL comes from ``ledger.store.migrations`` (``config.attributes["dsn"]``)
or, when alembic is run by hand, from ``LEDGER_DATABASE_URL``.
"""

import asyncio
import os

from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from ledger.store.migrations import sqlalchemy_url

config = context.config


def _dsn() -> str:
    dsn = config.attributes.get("dsn") or os.environ.get("LEDGER_DATABASE_URL")
    if not dsn:
        raise SystemExit("set LEDGER_DATABASE_URL to the database to migrate")
    return dsn


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(sqlalchemy_url(_dsn()))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=sqlalchemy_url(_dsn()), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
