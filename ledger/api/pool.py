"""The read pool as a request uses it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from ..store.connection import Conn
from .keys import POOL, SETTINGS

#: Connections whose query was given up, on their way back to the pool.
_returning: set[asyncio.Task[None]] = set()


@contextlib.asynccontextmanager
async def read_connection(request: web.Request) -> AsyncIterator[Conn]:
    """A connection of the read pool for ``request``, waited for at most
    ``LEDGER_DATABASE_TIMEOUT`` seconds, as each query on it is (see
    :func:`ledger.api.app.pool_ctx`): :class:`TimeoutError`, which answers
    503, rather than a wait for ever on a database that no longer answers.

    asyncpg gives a connection whose query it gave up back to the pool only
    once the server has confirmed the query's cancellation, which a server
    that stopped answering never does: it then closes the connection, after
    as long again. The request is answered meanwhile, not after that, and
    so is one whose block is given up by a time limit around it (a proof's),
    which cancels it."""
    pool = request.app[POOL]
    conn = await pool.acquire(timeout=request.app[SETTINGS].database_timeout)
    given_up = False
    try:
        yield conn
    except (TimeoutError, asyncio.CancelledError):
        given_up = True
        raise
    finally:
        if given_up:
            returning = asyncio.create_task(pool.release(conn))
            _returning.add(returning)
            returning.add_done_callback(_returned)
        else:
            await pool.release(conn)


def _returned(task: asyncio.Task[None]) -> None:
    _returning.discard(task)
    if not task.cancelled():
        task.exception()  # the connection closed instead: nothing more to do
