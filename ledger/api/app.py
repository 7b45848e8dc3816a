"""The application factory and the resources whose lifetime is the app's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timezone

from aiohttp import web

from ..config import Settings
from ..store import migrations
from ..store.connection import connect, create_pool
from ..store.coalescer import Coalescer
from ..store.expiry import Expirer
from ..store.writer import Clock, Writer
from . import accounts, admin, health, history, transfers
from .keys import CLOCK, COALESCER, DSN, EXPIRER, POOL, SETTINGS, STOPPING, STREAM_POOL, STREAMS, WRITER
from .stream_state import OpenStreams
from .auth import auth_middleware
from .middlewares import error_middleware, request_id_middleware

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The service cannot start; the message says why and what to do."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def create_app(settings: Settings, *, clock: Clock = utc_now) -> web.Application:
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[STREAMS] = OpenStreams()
    app[STOPPING] = asyncio.Event()
    app.cleanup_ctx.extend([database_ctx, pool_ctx, stream_pool_ctx, writer_ctx, expiry_ctx])
    app.on_shutdown.append(_stop_following)
    for module in (accounts, transfers, history, admin, health):
        app.router.add_routes(module.routes)
    return app


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """``LEDGER_DATABASE_URL``, whose schema must be at head. (``ledger
    serve`` starts the embedded server, when it runs one, before any app.)"""
    dsn = app[SETTINGS].database_url
    if dsn is None:
        raise StartupError("no database: set LEDGER_DATABASE_URL (or run `ledger serve`)")
    app[DSN] = dsn
    conn = await connect(dsn)
    try:
        problem = await migrations.schema_problem(conn)
    finally:
        await conn.close()
    if problem is not None:
        raise StartupError(problem)
    yield


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with await create_pool(
        app[DSN], min_size=settings.pool_min_size, max_size=settings.pool_max_size
    ) as pool:
        app[POOL] = pool
        yield


async def stream_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """Connections for streams, opened as streams need them."""
    async with await create_pool(app[DSN], min_size=0, max_size=app[SETTINGS].stream_pool_size) as pool:
        app[STREAM_POOL] = pool
        yield


async def _stop_following(app: web.Application) -> None:
    """On shutdown, following streams end (cleanly) instead of holding it up."""
    app[STOPPING].set()


async def writer_ctx(app: web.Application) -> AsyncIterator[None]:
    """The writer and the coalescer in front of it. On cleanup the coalescer
    drains its queue (every queued write is answered) before the writer's
    connection closes."""
    writer = Writer(app[DSN], policy=app[SETTINGS].retry, clock=app[CLOCK])
    coalescer = Coalescer(writer, max_queued=app[SETTINGS].write_queue)
    app[WRITER] = writer
    app[COALESCER] = coalescer
    coalescer.start()
    yield
    await coalescer.close()
    await writer.close()


async def expiry_ctx(app: web.Application) -> AsyncIterator[None]:
    """The background sweep that expires pending transfers past their deadline."""
    expirer = Expirer(app[POOL], app[COALESCER].append, app[CLOCK], interval=app[SETTINGS].expiry_interval)
    app[EXPIRER] = expirer
    task = asyncio.create_task(expirer.run(), name="ledger-expiry")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
