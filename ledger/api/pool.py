"""The read pool as a request uses it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .keys import POOL, SETTINGS

if TYPE_CHECKING:
    from asyncpg.pool import PoolAcquireContext


def read_connection(request: web.Request) -> PoolAcquireContext:
    """A connection of the read pool for ``request`` (``async with``), waited
    for at most ``LEDGER_DATABASE_TIMEOUT`` seconds, as each query on it
    is (see :func:`ledger.api.app.pool_ctx`): :class:`TimeoutError`, which
    answers 503, rather than a wait for ever behind reads that a database
    no longer answers."""
    return request.app[POOL].acquire(timeout=request.app[SETTINGS].database_timeout)
