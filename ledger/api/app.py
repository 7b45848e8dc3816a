"""The application factory and the resources whose lifetime is the app's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import web

from .. import metrics
from ..config import Settings
from ..signing import KeyFileError, NoteSigner, load_key
from ..store import migrations, replica
from ..store.coalescer import Coalescer
from ..store.connection import Closing, connect, create_pool
from ..store.expiry import Expirer
from ..store.feed import Feed
from ..store.follow import HeadPoller, Notifications
from ..store.head import read_head
from ..store.retry import CANNOT_OPEN, cannot_open
from ..store.writer import Clock, Writer
from . import accounts, admin, checkpoints, health, history, monitoring, openapi, proofs, transfers
from .auth import auth_middleware
from .checkpoints import Checkpoints
from .keys import (
    CHECKPOINTS,
    CLOCK,
    CLOSING,
    COALESCER,
    DSN,
    EXPIRER,
    FEED,
    POOL,
    READ_DSN,
    SETTINGS,
    STREAM_POOL,
    STREAMS,
    WAKEUPS,
    WRITER,
)
from .middlewares import error_middleware, request_id_middleware
from .stream_state import OpenStreams

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The service cannot start; the message says why and what to do."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, *, clock: Clock = utc_now) -> web.Application:
    middlewares = [monitoring.metrics_middleware, request_id_middleware, error_middleware]
    if settings.tokens:  # with none, every request is let through: no need to ask
        middlewares.append(auth_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app.cleanup_ctx.extend(
        [
            database_ctx,
            pool_ctx,
            checkpoints_ctx,
            stream_pool_ctx,
            wakeups_ctx,
            feed_ctx,
            writer_ctx,
            expiry_ctx,
            sampler_ctx,
        ]
    )
    app.on_shutdown.append(_stop_streams)
    for module in (accounts, transfers, history, checkpoints, proofs, admin, health, monitoring, openapi):
        app.router.add_routes(module.routes)
    app[STREAMS] = OpenStreams(openapi.stream_routes(app))
    return app


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """``LEDGER_DATABASE_URL``, whose schema must be at head. (``ledger
    serve`` starts the embedded server, when it runs one, before any app.)"""
    dsn = app[SETTINGS].database_url
    if dsn is None:
        raise StartupError("no database: set LEDGER_DATABASE_URL (or run `ledger serve`)")
    app[DSN] = dsn
    app[CLOSING] = Closing(app[SETTINGS].database_timeout)
    conn = await connect(dsn)
    try:
        problem = await migrations.schema_problem(conn)
        if problem is None:
            # The head this worker last saw is, until it reads another, the one it started on.
            metrics.EVENT_LOG_HEAD_SEQ.set((await read_head(conn)).seq)
    finally:
        await conn.close()
    if problem is not None:
        raise StartupError(problem)
    yield


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pool of point reads and pages, every query of which (and every
    connection it opens) is given up with :class:`TimeoutError` after
    ``LEDGER_DATABASE_TIMEOUT`` seconds: the request gets 503, where a
    database that stopped answering would hold it for ever. asyncpg then
    cancels the query, within as long again, or closes the connection
    (:func:`~ledger.api.pool.read_connection` does not wait for that)."""
    settings = app[SETTINGS]
    limit = settings.database_timeout
    try:
        app[POOL] = pool = await create_pool(
            app[DSN],
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            command_timeout=limit,
            timeout=limit,
        )
    except CANNOT_OPEN as error:
        raise StartupError(
            f"cannot open the read pool's {settings.pool_min_size} connections (LEDGER_POOL_MIN_SIZE): "
            + cannot_open(error)
        ) from None
    yield
    await app[CLOSING].close(pool, "the read pool")


async def checkpoints_ctx(app: web.Application) -> AsyncIterator[None]:
    """The signed checkpoints, with the key in ``LEDGER_SIGNING_KEY_FILE``
    (``ledger serve`` names the embedded default's); none without one."""
    settings = app[SETTINGS]
    app[CHECKPOINTS] = None
    if settings.signing_key_file is not None:
        try:
            key = load_key(settings.signing_key_file)
        except KeyFileError as error:
            raise StartupError(str(error)) from None
        app[CHECKPOINTS] = Checkpoints(NoteSigner(settings.log_origin, key), app[POOL], wait=settings.database_timeout)
    yield


async def stream_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """Connections for streams, opened as streams need them: to
    ``LEDGER_READ_DATABASE_URL`` when it is set, else to the primary.

    A replica that cannot be reached at start does not stop the service (its
    reads answer 503 until it is back); one that is not a standby is warned of.
    """
    settings = app[SETTINGS]
    app[READ_DSN] = settings.read_database_url or app[DSN]
    if settings.read_database_url is not None:
        await _check_replica(settings.read_database_url)
    app[STREAM_POOL] = pool = await create_pool(app[READ_DSN], min_size=0, max_size=settings.stream_pool_size)
    yield
    await app[CLOSING].close(pool, "the stream pool")


async def _check_replica(dsn: str) -> None:
    try:
        state = await replica.read_state(dsn)
    except CANNOT_OPEN as error:
        log.warning("the read replica is unreachable (its reads answer 503 until it is back): %s", error)
        return
    if not state.standby:
        log.warning(
            "LEDGER_READ_DATABASE_URL is not a standby (pg_is_in_recovery() is false): long reads go there all the same"
        )


async def wakeups_ctx(app: web.Application) -> AsyncIterator[None]:
    """What wakes following streams: NOTIFY on the primary, or one poller of
    the replica's head for every follower of this process."""
    settings = app[SETTINGS]
    if settings.read_database_url is None:
        app[WAKEUPS] = Notifications()
        yield
        return
    poller = HeadPoller(settings.read_database_url, settings.replica_poll_interval)
    app[WAKEUPS] = poller
    task = asyncio.create_task(poller.run(), name="ledger-replica-head")
    yield
    await _cancelled(task)


async def feed_ctx(app: web.Application) -> AsyncIterator[None]:
    """The feed of new events for this process's followers, on a connection
    of its own to where long reads go, checked as often as followers get a
    keepalive line."""
    settings = app[SETTINGS]
    feed = Feed(app[READ_DSN], app[WAKEUPS], max_buffered=settings.follow_buffer, quiet=settings.stream_keepalive)
    app[FEED] = feed
    task = asyncio.create_task(feed.run(), name="ledger-feed")
    yield
    await _cancelled(task)


async def _stop_streams(app: web.Application) -> None:
    """On shutdown, following streams end (cleanly) instead of holding it
    up; the others get ``LEDGER_SHUTDOWN_TIMEOUT`` to end, and are then cut
    (aiohttp would wait as long again before cancelling them)."""
    app[FEED].stop()
    app[STREAMS].cut_after(app[SETTINGS].shutdown_timeout)


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
    writer.close()


async def expiry_ctx(app: web.Application) -> AsyncIterator[None]:
    """The background sweep that expires pending transfers past their deadline."""
    expirer = Expirer(app[POOL], app[COALESCER].submit, app[CLOCK], interval=app[SETTINGS].expiry_interval)
    app[EXPIRER] = expirer
    task = asyncio.create_task(expirer.run(), name="ledger-expiry")
    yield
    await _cancelled(task)


async def sampler_ctx(app: web.Application) -> AsyncIterator[None]:
    """The sampler of the pools' gauges (see :mod:`ledger.api.monitoring`)."""
    task = asyncio.create_task(monitoring.sampling(app), name="ledger-metrics-sampler")
    yield
    await _cancelled(task)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
