"""History: an account's entries, the global event feed (streamed NDJSON), and
an account's balance as of a past seq."""

from __future__ import annotations

import msgspec
from aiohttp import web

from ..domain.codes import Code, InvalidField
from ..store import history, lines
from ..store.connection import Conn
from ..store.feed import Subscription
from . import codec, filters
from .keys import FEED, SETTINGS
from .openapi import NDJSON, documented
from .paths import account_in_path
from .responses import BalanceAsOf, EntryLine, EventLine, balance_as_of, error_out
from .schemas import BalanceQuery, EntriesQuery, EventsQuery, given
from .streams import NdjsonResponse, refuse_past_head, stream, stream_connection, writes_first

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
    query = filters.parse_plain(request, EntriesQuery)

    async def body(conn: Conn, out: NdjsonResponse) -> None:
        await lines.send_entry_lines(
            conn,
            out.send,
            account.id,
            scale=account.scale,
            after_seq=query.after_seq,
            limit=given(query.limit),
            pace=writes_first(request),
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
    commits, with an empty line after each quiet ``stream_keepalive`` seconds,
    until the client leaves or the service stops.

    A follower catches up on a stream connection to where the process's
    :class:`~ledger.store.feed.Feed` stood when it subscribed, gives the
    connection back, and from then on writes what the feed hands it: one
    read of each new page serves every follower. One that falls more than
    ``LEDGER_FOLLOW_BUFFER`` bytes behind is cut off with a final error line."""
    query = filters.parse_plain(request, EventsQuery)
    if not query.follow:

        async def all_of_it(conn: Conn, out: NdjsonResponse) -> None:
            await lines.send_event_lines(
                conn, out.send, after_seq=query.after_seq, limit=given(query.limit), pace=writes_first(request)
            )

        return await stream(request, all_of_it)
    with request.app[FEED].subscribed() as subscription:
        follower = _Follower(request, subscription, query.after_seq, given(query.limit))
        return await stream(request, follower.catch_up, then=follower.follow)


class _Follower:
    """Where one following stream is: the last seq it sent, and how many
    events it may still send (``None``: no limit)."""

    def __init__(self, request: web.Request, subscription: Subscription, last: int, left: int | None) -> None:
        self._request = request
        self._subscription = subscription
        self.last = last
        self.left = left

    async def catch_up(self, conn: Conn, out: NdjsonResponse) -> None:
        """Send the events after :attr:`last` up to where the feed started."""
        behind = self._subscription.start - self.last
        if behind > 0 and self.left != 0:
            sent = await lines.send_event_lines(
                conn, out.send, after_seq=self.last, limit=behind if self.left is None else min(behind, self.left)
            )
            self._sent(sent.lines, sent.last_seq)
        await out.flush()

    async def follow(self, out: NdjsonResponse) -> None:
        """Send what the feed hands on, until the limit, the client leaves, the
        service stops, or the follower falls too far behind."""
        keepalive = self._request.app[SETTINGS].stream_keepalive
        while self.left != 0:
            page = await self._subscription.next(keepalive)
            if self._subscription.cut:
                await out.send(_too_slow(self._subscription.max_buffered, self.last))
                return
            if self._subscription.stopped:
                return
            if page is None:
                await out.empty_line()
                continue
            text = page.after(self.last)
            if self.left is not None:
                text = b"".join(text.splitlines(keepends=True)[: self.left])
            count = text.count(b"\n")
            if count:
                await out.send(text)
                await out.flush()
                self._sent(count, self.last + count)

    def _sent(self, count: int, last_seq: int) -> None:
        self.last = last_seq
        if self.left is not None:
            self.left -= count


def _too_slow(max_buffered: int, last: int) -> bytes:
    """The last line of a follower cut off for falling behind."""
    message = (
        f"this follower fell more than {max_buffered} bytes behind the log and is cut off; "
        f"reconnect with after_seq={last}"
    )
    return msgspec.json.encode(error_out(str(Code.UNAVAILABLE), message, None)) + b"\n"


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
    query = filters.parse_plain(request, BalanceQuery)
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
