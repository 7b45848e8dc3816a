"""The schema, through alembic: apply it, and tell whether a database is at head.

Alembic (and SQLAlchemy under it) is used only here and in ``alembic/``; the
running service talks to PostgreSQL through asyncpg alone.
"""

from __future__ import annotations

import functools

import sqlalchemy.exc
from alembic.config import Config
from alembic.script import ScriptDirectory

from alembic import command

from .connection import Conn
from .retry import CANNOT_OPEN, cannot_open

#: The migration scripts, as a resource of the installed package
#: (``ledger/alembic``, the checkout's top-level ``alembic/`` folder), so that
#: an installed service needs neither ``alembic.ini`` nor a checkout.
SCRIPT_LOCATION = "ledger:alembic"


def sqlalchemy_url(dsn: str) -> str:
    """The asyncpg DSN (``postgresql://…``) as SQLAlchemy's asyncpg URL."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme not in ("postgres", "postgresql", "postgresql+asyncpg"):
        raise ValueError(f"not a PostgreSQL URL: {dsn!r}")
    return f"postgresql+asyncpg://{rest}"


def alembic_config(dsn: str | None = None) -> Config:
    """Alembic's configuration, built in code: the packaged scripts and, if
    given, the DSN that ``alembic/env.py`` migrates."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if dsn is not None:
        config.attributes["dsn"] = dsn
    return config


class CannotMigrate(Exception):
    """The database could not be reached, or refused a migration; the
    message says which, for an operator, in the database's own words."""


def upgrade(dsn: str) -> None:
    """Apply every migration up to head, each in a transaction of its own, or
    raise :class:`CannotMigrate`. Blocking: it runs its own event loop, so
    call it from a thread when a loop is already running."""
    try:
        command.upgrade(alembic_config(dsn), "head")
    except sqlalchemy.exc.DBAPIError as error:  # alembic's connection wraps the database's own error
        raise CannotMigrate(f"the database refused: {error.orig}") from error
    except CANNOT_OPEN as error:
        raise CannotMigrate(cannot_open(error)) from error


@functools.cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def schema_problem(conn: Conn) -> str | None:
    """What keeps the service from running on ``conn``'s database, said for
    its operator, or ``None`` when the schema is at head."""
    revision = await current_revision(conn)
    if revision == head_revision():
        return None
    return (
        f"the database schema is at revision {revision or 'none'}, this service needs {head_revision()}: "
        "run `ledger migrate` first"
    )


async def current_revision(conn: Conn) -> str | None:
    """The revision the database is at, or ``None`` if it was never migrated."""
    exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not exists:
        return None
    revision: str | None = await conn.fetchval("SELECT version_num FROM alembic_version")
    return revision
