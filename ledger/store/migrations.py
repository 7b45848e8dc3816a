"""The schema, through alembic: apply it, and tell whether a database is at head.

Alembic (and SQLAlchemy under it) is used only here and in ``alembic/``; the
running service talks to PostgreSQL through asyncpg alone.
"""

from __future__ import annotations

import functools
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

#: The repository's top level, where ``alembic.ini`` and ``alembic/`` live.
ROOT = Path(__file__).resolve().parents[2]


def sqlalchemy_url(dsn: str) -> str:
    """The asyncpg DSN (``postgresql://…``) as SQLAlchemy's asyncpg URL."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme not in ("postgres", "postgresql", "postgresql+asyncpg"):
        raise ValueError(f"not a PostgreSQL URL: {dsn!r}")
    return f"postgresql+asyncpg://{rest}"


def alembic_config(dsn: str | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    if dsn is not None:
        config.attributes["dsn"] = dsn
    return config


def upgrade(dsn: str) -> None:
    """Apply every migration up to head. Blocking: it runs its own event loop,
    so call it from a thread when a loop is already running."""
    command.upgrade(alembic_config(dsn), "head")


@functools.cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(conn: asyncpg.Connection) -> str | None:
    """The revision the database is at, or ``None`` if it was never migrated."""
    exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not exists:
        return None
    return await conn.fetchval("SELECT version_num FROM alembic_version")
