"""Streaming responses: NDJSON written in chunks from a stream connection.

Streams take their connections from a pool of their own (``STREAM_POOL``),
so that long readers can never take the connections writes and point reads
need; when it is exhausted a new stream waits ``stream_wait`` seconds and
then gets 503 ``unavailable``. Each chunk write is awaited, so a slow client
slows the query feeding it instead of growing memory. A stream of the
whole log or of an account's entries lets writes go first
(:func:`writes_first`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn

from aiohttp import web

from ..domain.codes import InvalidField
from ..store.connection import Conn, answered_within, dropped_if_cancelled
from ..store.head import read_head
from ..store.lines import Pace
from ..store.retry import CONNECTION_LOST, Unavailable
from .keys import COALESCER, SETTINGS, STREAM_POOL, STREAMS
from .middlewares import REQUEST_ID, STATUS_SENT_KEY, request_id, route_template
from .pool import read_connection

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
#: Bytes gathered before a write: large enough to amortise the write, small
#: enough that a stream's memory does not depend on its length.
CHUNK = 64 * 1024


@contextlib.asynccontextmanager
async def stream_connection(request: web.Request, *, within: bool = False) -> AsyncIterator[Conn]:
    """A connection of the stream pool, or 503: after ``stream_wait`` seconds,
    or at once when the read replica cannot be reached. ``within``: the
    block is given up after ``LEDGER_DATABASE_TIMEOUT`` seconds
    (:func:`~ledger.store.connection.answered_within`; 503), for reads that
    are short whatever the log's size (proofs), where a stream's may rightly
    run for minutes."""
    pool = request.app[STREAM_POOL]
    settings = request.app[SETTINGS]
    try:
        conn = await pool.acquire(timeout=settings.stream_wait)
    except TimeoutError:
        raise Unavailable(
            f"no stream connection within {settings.stream_wait:g} s: all {pool.get_max_size()} are busy,"
            " or the database does not answer; try again shortly"
        ) from None
    except CONNECTION_LOST as error:
        if settings.read_database_url is None:
            raise
        log.warning("the read replica is unreachable: %s", error)
        raise Unavailable("the read replica is unreachable; try again shortly") from None
    # Cancelled (the service stopping, past LEDGER_SHUTDOWN_TIMEOUT), a stream
    # drops its connection: its transaction is the service's own
    # (connection.transaction), which sends nothing more when cancelled. A
    # block within the limit is done long before.
    bound = answered_within(conn, settings.database_timeout) if within else dropped_if_cancelled(conn)
    try:
        async with bound:
            yield conn
    finally:
        await pool.release(conn)


def writes_first(request: web.Request) -> Pace | None:
    """The pace of a bulk read of the primary: before each page after the
    first, it waits (``stream_pause`` seconds at most) until this process
    has no write waiting or in flight. Streams at full speed take the
    database's CPU that appends need; with this, a busy service's writes
    come first and every stream still moves, by a page at least every
    ``stream_pause`` seconds. Streams of a read replica take nothing from
    the primary, and do not wait."""
    settings = request.app[SETTINGS]
    if settings.read_database_url is not None or not settings.stream_pause:
        return None
    return functools.partial(request.app[COALESCER].idle, settings.stream_pause)


async def refuse_past_head(request: web.Request, value: int, head: int, field: str) -> NoReturn:
    """Refuse ``value`` (a seq or a tree size) beyond the ``head`` that long
    reads see: 422 ``invalid_field`` naming ``field``, or 503 while a
    replica has yet to replay an event the primary has."""
    if request.app[SETTINGS].read_database_url is not None:
        async with read_connection(request) as primary:
            if value <= (await read_head(primary)).seq:
                raise Unavailable(f"the read replica has replayed the log up to event {head}, not yet {value}")
    raise InvalidField(f"{field} {value} is past the head of the log ({head})", field)


class NdjsonResponse:
    """NDJSON text (whole lines, each ending in a newline), written in
    chunks of at least :data:`CHUNK` bytes, or less at a :meth:`flush`."""

    def __init__(self, request: web.Request) -> None:
        self.response = web.StreamResponse(headers={REQUEST_ID: request_id(request)})
        self.response.content_type = NDJSON
        self._request = request
        self._buffer = bytearray()

    async def prepare(self) -> None:
        await self.response.prepare(self._request)
        self._request[STATUS_SENT_KEY] = self.response.status

    async def send(self, lines: bytes) -> None:
        """Send ``lines`` (one or more whole lines), gathered with those
        before them until there are :data:`CHUNK` bytes."""
        if not self._buffer and len(lines) >= CHUNK:
            await self.response.write(lines)
            return
        self._buffer += lines
        if len(self._buffer) >= CHUNK:
            await self.flush()

    async def empty_line(self) -> None:
        """What keeps an idle following stream alive through proxies."""
        self._buffer += b"\n"
        await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            await self.response.write(data)

    async def finish(self) -> web.StreamResponse:
        await self.flush()
        await self.response.write_eof()
        return self.response


async def stream(
    request: web.Request,
    body: Callable[[Conn, NdjsonResponse], Awaitable[None]],
    *,
    then: Callable[[NdjsonResponse], Awaitable[None]] | None = None,
) -> web.StreamResponse:
    """Take a stream connection (or answer 503), then run ``body(conn, out)``
    against a prepared :class:`NdjsonResponse`; give the connection back,
    run ``then(out)`` if given, and end the stream.

    A client that goes away ends the stream quietly; one cut at a stop
    still gets its access line. A failure once the
    stream has started cannot become an error response any more: it is
    logged and the connection is cut, so the client sees a truncated stream
    (no final chunk) rather than one that looks complete.
    """
    async with contextlib.AsyncExitStack() as held:
        conn = await held.enter_async_context(stream_connection(request))
        if request.app[STREAMS].past_deadline:
            # Its connection came after the stop cut the streams.
            raise Unavailable("the service is stopping: try again, on another instance if there is one")
        out = NdjsonResponse(request)
        await out.prepare()
        try:
            with request.app[STREAMS].open(route_template(request) or "unmatched"):
                await body(conn, out)
                if then is not None:
                    await held.aclose()
                    await then(out)
                return await out.finish()
        except asyncio.CancelledError:
            # Cut at a stop: aiohttp writes no access line for a handler
            # cancelled, and every request gets one. (The access logger times
            # the request from the service's own start, not from this.)
            request.protocol.log_access(request, out.response, asyncio.get_running_loop().time())
            raise
        except ConnectionError:
            log.info("stream %s: the client went away", request_id(request))
        except Exception:
            log.exception("stream %s failed after it started; cutting it", request_id(request))
            if request.transport is not None:
                request.transport.close()
        return out.response
