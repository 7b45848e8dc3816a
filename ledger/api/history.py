"""History: an account's entries, the global event feed (streamed NDJSON), and
an account's balance as of a past seq."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..domain.codes import Code, InvalidField
from ..store import history, lines
from ..store.connection import Conn
from . import codec
from .keys import SETTINGS, STOPPING, WAKEUPS
from .openapi import NDJSON, documented
from .paths import account_in_path
from .responses import BalanceAsOf, EntryLine, EventLine, balance_as_of
from .schemas import BalanceQuery, EntriesQuery, EventsQuery, given
from .streams import NdjsonResponse, refuse_past_head, stream, stream_connection

routes = web.RouteTableDef()


@routes.get("/v1/accounts/{id}/entries")
@documented(
    "An account's movements, oldest first, each with the balance right after it (NDJSON)",
    ok={200: EntryLine},
    media=(NDJSON,),
    query=EntriesQuery,
    errors=(Code.ACCOUNT_NOT_FOUND,),
)
async def account_entries(request: web.Request) -> web.StreamResponse:
    """The account's movements after ``after_seq``, oldest first, each with the
    balance right after it."""
    account = await account_in_path(request)
    query = codec.convert(dict(request.query), EntriesQuery)

    async def body(conn: Conn, out: NdjsonResponse) -> None:
        await lines.send_entry_lines(
            conn, out.send, account.id, scale=account.scale, after_seq=query.after_seq, limit=given(query.limit)
        )

    return await stream(request, body)


@routes.get("/v1/events")
@documented(
    "The event log after `after_seq`, in order; with `follow`, then each event as it commits (NDJSON)",
    ok={200: EventLine},
    media=(NDJSON,),
    query=EventsQuery,
)
async def events(request: web.Request) -> web.StreamResponse:
    """The log after ``after_seq``; with ``follow``, then each new event as it
    commits, woken by NOTIFY, with an empty line after each quiet
    ``stream_keepalive`` seconds, until the client leaves or the service stops."""
    query = codec.convert(dict(request.query), EventsQuery)
    settings = request.app[SETTINGS]
    stopping = request.app[STOPPING]

    async def body(conn: Conn, out: NdjsonResponse) -> None:
        if not query.follow:
            await _events_after(conn, out, query.after_seq, given(query.limit))
            return
        woken = asyncio.Event()
        # Subscribed before the first read: a commit after its snapshot then
        # always wakes the next one.
        async with request.app[WAKEUPS].subscribed(conn, woken.set):
            last, left = query.after_seq, given(query.limit)
            while True:
                woken.clear()
                last, left = await _events_after(conn, out, last, left)
                await out.flush()
                if left == 0:
                    return
                if not await _wait(woken, stopping, settings.stream_keepalive):
                    await out.empty_line()
                if stopping.is_set():
                    return

    return await stream(request, body)


async def _events_after(conn: Conn, out: NdjsonResponse, last: int, left: int | None) -> tuple[int, int | None]:
    """Write the events after ``last`` (at most ``left``); return the new last
    seq and how many may still be written."""
    sent = await lines.send_event_lines(conn, out.send, after_seq=last, limit=left)
    return sent.last_seq, None if left is None else left - sent.lines


async def _wait(woken: asyncio.Event, stopping: asyncio.Event, timeout: float) -> bool:
    """Wait until woken or stopping; ``False`` if ``timeout`` passed first."""
    waiters = [asyncio.ensure_future(woken.wait()), asyncio.ensure_future(stopping.wait())]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)


@routes.get("/v1/accounts/{id}/balance")
@documented(
    "An account's balance right after event `as_of_seq` (default: the head)",
    ok={200: BalanceAsOf},
    query=BalanceQuery,
    errors=(Code.ACCOUNT_NOT_FOUND,),
)
async def balance(request: web.Request) -> web.Response:
    """The balance right after event ``as_of_seq`` (default: the head), read
    where long reads go (the replica, when there is one)."""
    account = await account_in_path(request)
    query = codec.convert(dict(request.query), BalanceQuery)
    async with stream_connection(request) as conn:
        head = await history.head_seq(conn)
        as_of_seq = given(query.as_of_seq)
        seq = head if as_of_seq is None else as_of_seq
        if seq > head:
            await refuse_past_head(request, seq, head, "as_of_seq")
        opened = await history.opened_seq(conn, account.id)
        if opened is None or seq < opened:
            raise InvalidField(f"account {account.id} was opened after event {seq}", "as_of_seq")
        past = await history.balance_as_of(conn, account.id, seq)
    return codec.respond(request, balance_as_of(account, seq, past))
