"""Connections and pools, with the codecs every connection of the service uses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg
import msgspec

from .retry import CONNECTION_LOST

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

#: A connection of its own, or one a pool lends: what a read runs on.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

log = logging.getLogger(__name__)

T = TypeVar("T")

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()

# jsonb's binary format is a version byte (1) followed by the JSON text.
_JSONB_VERSION = b"\x01"


def _encode_jsonb(value: object) -> bytes:
    return _JSONB_VERSION + _json_encoder.encode(value)


def _decode_jsonb(data: bytes) -> object:
    return _json_decoder.decode(data[1:])


#: Milliseconds between a running statement's checks that its client is
#: still connected (PostgreSQL 14 and later).
CLIENT_CHECK_INTERVAL_MS = 1000


async def _check_for_client(conn: asyncpg.Connection) -> None:
    """Have the server end a statement of ``conn`` within
    :data:`CLIENT_CHECK_INTERVAL_MS` of the service closing the connection.

    Otherwise a statement runs to its end though nobody waits for it: an
    append sent as one statement (committed by itself), given up while it
    waited for the append lock or lost with its process, would be recorded
    once the lock is let go, its caller long told otherwise, and its session
    would hold a connection slot meanwhile.
    Where the server has no such check, or may not change it (a managed
    service may fix it at 0), connections go without it."""
    if conn.get_server_version() >= (14,):
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute(f"SET client_connection_check_interval = {CLIENT_CHECK_INTERVAL_MS}")


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb in and out as Python objects, through msgspec; numeric as
    :class:`~decimal.Decimal` through its text form; statements ended by the
    server once the connection is closed (:func:`_check_for_client`)."""
    await _check_for_client(conn)
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )
    # Exact either way; the text form is the cheaper to encode and decode
    # (docs/performance.md), and an append sends a numeric for every amount
    # and balance it writes.
    await conn.set_type_codec("numeric", schema="pg_catalog", encoder=str, decoder=Decimal, format="text")


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """A connection made by :func:`init_connection`; closed again if that
    fails or is cancelled."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn, **kwargs)
    try:
        await init_connection(conn)
    except BaseException:
        conn.terminate()
        raise
    return conn


#: Opens a SERIALIZABLE transaction.
BEGIN_SERIALIZABLE = "BEGIN ISOLATION LEVEL SERIALIZABLE"
#: Opens a read-only transaction on one snapshot: what a long read reads in.
BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


@contextlib.asynccontextmanager
async def transaction(conn: Conn, begin: str = BEGIN_SERIALIZABLE) -> AsyncIterator[None]:
    """A transaction that ``begin`` opens on ``conn`` (a simple query, which
    may take a lock as well), committed if the block succeeds and rolled back
    if it raises.

    Cancelled, it sends nothing more, where asyncpg's own transaction would
    send a ROLLBACK and wait for its answer: a server that stopped answering,
    the reason for most cancellations, would answer neither. Whoever cancels
    must close ``conn``, which ends the transaction."""
    try:
        await conn.execute(begin)
        yield
    except Exception:
        if not conn.is_closed() and conn.is_in_transaction():
            with contextlib.suppress(*CONNECTION_LOST):
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


#: The send buffer asked of the kernel for a connection that sends large
#: appends (it grants at most ``net.core.wmem_max``, doubled).
SEND_BUFFER = 4 << 20


def widen_send_buffer(conn: asyncpg.Connection, size: int = SEND_BUFFER) -> None:
    """Ask for a send buffer of ``size`` bytes on ``conn``'s socket.

    What the service writes leaves the process only when its event loop
    turns, and a Unix socket's default buffer (some 200 KB) holds a few
    milliseconds of PostgreSQL's reading of a COPY: any step of the loop
    longer than that (deciding, decoding or answering other requests) left
    the server idle in the middle of an append. With megabytes in the kernel,
    the server reads on while the loop is busy (docs/performance.md has the
    figures).
    """
    # asyncpg offers no public way to its transport; without one, the
    # connection keeps the default buffer.
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook that skips asyncpg's reset query.

    The service sets session state on a pooled connection only as it opens
    it (:func:`init_connection`), which must last as long as it, and the
    reset query is a round trip on every release, which small reads would
    pay each time. asyncpg still rolls back an open transaction on release.
    """


async def create_pool(dsn: str, *, min_size: int, max_size: int, **connect: Any) -> asyncpg.Pool:
    """A pool of connections made by :func:`init_connection`, each opened
    with ``connect`` (``asyncpg.connect``'s arguments)."""
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init_connection, reset=_keep_session, **connect
    )


#: Seconds a probe of the database (readiness, the head a scrape reports)
#: waits for a connection, and as long for its answer (:func:`read_within`).
PROBE_WAIT = 2.0


@contextlib.asynccontextmanager
async def answered_within(conn: Conn, seconds: float) -> AsyncIterator[None]:
    """The block, given up with :class:`TimeoutError` after ``seconds``, and
    ``conn`` then closed, not used or pooled again: a server that does not
    answer may not answer the cancellation either."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        conn.terminate()
        raise


@contextlib.asynccontextmanager
async def dropped_if_cancelled(conn: Conn) -> AsyncIterator[None]:
    """The block; cancelled (the service stopping), ``conn`` is closed without
    a word and not pooled again, where asyncpg would cancel its query and
    wait for the server's answer, which a server that stopped answering
    never gives."""
    try:
        yield
    except asyncio.CancelledError:
        conn.terminate()
        raise


class Closing:
    """The closing of a process's pools as it stops, within ``seconds`` in
    all, counted from the first.

    Each is closed as PostgreSQL expects (once its connections are given
    back), or, past that time, dropped: its sockets are closed without a
    word, which ends their sessions all the same. A database that stopped
    answering (a hung host, a cut network) answers no close, and the service
    must still stop when told to; once it has not answered one, the others
    are not waited on as long again."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._deadline: float | None = None

    async def close(self, pool: asyncpg.Pool, what: str) -> None:
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + self._seconds
        try:
            async with asyncio.timeout_at(self._deadline):
                await pool.close()
        except TimeoutError:
            pool.terminate()
            log.warning("%s did not close within %g s: its connections were dropped", what, self._seconds)


async def read_within(pool: asyncpg.Pool, seconds: float, read: Callable[[Conn], Awaitable[T]]) -> T:
    """``read(connection)`` on a connection of ``pool``, given up with
    :class:`TimeoutError` after ``seconds`` waiting for the connection or as
    long reading (:func:`answered_within`): what a probe of the database
    (readiness, a scrape) waits for at most, however the database fails."""
    conn = await pool.acquire(timeout=seconds)
    try:
        async with answered_within(conn, seconds):
            return await read(conn)
    finally:
        await pool.release(conn)
