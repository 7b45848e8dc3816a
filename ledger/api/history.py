"""History: an account's entries, the global event feed (streamed NDJSON), and
an account's balance as of a past seq."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from ..domain import money
from ..domain.chain import format_timestamp
from ..domain.codes import InvalidField
from ..store import history
from ..store.rows import balance_from_row
from ..store.append import NOTIFY_CHANNEL
from . import codec
from .keys import POOL, SETTINGS, STOPPING
from .paths import account_in_path
from .schemas import BalanceQuery, EntriesQuery, EventsQuery, balance_out
from .streams import NdjsonResponse, stream

routes = web.RouteTableDef()

@routes.get("/v1/accounts/{id}/entries")
async def account_entries(request: web.Request) -> web.StreamResponse:
    """The account's movements after ``after_seq``, oldest first, each with the
    balance right after it."""
    account = await account_in_path(request)
    query = codec.convert(dict(request.query), EntriesQuery)
    scale = account.scale

    async def body(conn: asyncpg.Connection, out: NdjsonResponse) -> None:
        rows = history.entries(conn, account.id, after_seq=query.after_seq, limit=query.limit)
        async with contextlib.aclosing(rows):
            async for row in rows:
                await out.line(_entry_out(row, scale))

    return await stream(request, body)


@routes.get("/v1/events")
async def events(request: web.Request) -> web.StreamResponse:
    """The log after ``after_seq``; with ``follow``, then each new event as it
    commits, woken by NOTIFY, with an empty line after each quiet
    ``stream_keepalive`` seconds, until the client leaves or the service stops."""
    query = codec.convert(dict(request.query), EventsQuery)
    settings = request.app[SETTINGS]
    stopping = request.app[STOPPING]

    async def body(conn: asyncpg.Connection, out: NdjsonResponse) -> None:
        woken = asyncio.Event()

        def notified(*_: object) -> None:
            woken.set()

        if query.follow:
            # Listen before the first read: a commit after its snapshot then
            # always wakes the next one.
            await conn.add_listener(NOTIFY_CHANNEL, notified)
        try:
            last, left = query.after_seq, query.limit
            while True:
                woken.clear()
                last, left = await _events_after(conn, out, last, left)
                await out.flush()
                if not query.follow or left == 0:
                    return
                if not await _wait(woken, stopping, settings.stream_keepalive):
                    await out.empty_line()
                if stopping.is_set():
                    return
        finally:
            if query.follow:
                await conn.remove_listener(NOTIFY_CHANNEL, notified)

    return await stream(request, body)


async def _events_after(
    conn: asyncpg.Connection, out: NdjsonResponse, last: int, left: int | None
) -> tuple[int, int | None]:
    """Write the events after ``last`` (at most ``left``); return the new last
    seq and how many may still be written."""
    rows = history.events(conn, after_seq=last, limit=left)
    async with contextlib.aclosing(rows):
        async for row in rows:
            await out.line(
                {
                    "seq": row["seq"],
                    "type": row["type"],
                    "stream_id": row["stream_id"],
                    "data": msgspec.Raw(row["data"]),
                    "recorded_at": format_timestamp(row["recorded_at"]),
                }
            )
            last = row["seq"]
            if left is not None:
                left -= 1
    return last, left


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
async def balance(request: web.Request) -> web.Response:
    """The balance right after event ``as_of_seq`` (default: the head)."""
    account = await account_in_path(request)
    query = codec.convert(dict(request.query), BalanceQuery)
    async with request.app[POOL].acquire() as conn:
        head = await history.head_seq(conn)
        seq = head if query.as_of_seq is None else query.as_of_seq
        if seq > head:
            raise InvalidField(f"as_of_seq {seq} is past the head of the log ({head})", "as_of_seq")
        opened = await history.opened_seq(conn, account.id)
        if opened is None or seq < opened:
            raise InvalidField(f"account {account.id} was opened by event {opened}, after {seq}", "as_of_seq")
        past = await history.balance_as_of(conn, account.id, seq)
    return codec.respond(
        request, {"account_id": account.id, "as_of_seq": seq, **balance_out(past, account.scale)}
    )


def _entry_out(row: asyncpg.Record, scale: int) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "transfer_id": row["transfer_id"],
        "type": row["type"],
        "side": row["side"],
        "amount": money.format_amount(row["amount"], scale),
        "balance": balance_out(balance_from_row(row), scale),
        "recorded_at": format_timestamp(row["recorded_at"]),
    }
