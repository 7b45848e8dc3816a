"""The NDJSON lines of ``/v1/events`` and ``/v1/accounts/{id}/entries`` (and
so of ``ledger export``), built by PostgreSQL, a page of lines at a time.

Each line is the JSON text the response structs (``EventLine``,
``EntryLine`` in :mod:`ledger.api.responses`) encode to, byte for byte: the
same keys in the same order, no blanks, ``data`` and ``metadata`` as jsonb
writes them, amounts at the account's scale, UUIDs in lower case, and
timestamps as :func:`~ledger.domain.chain.format_timestamp` writes them
(``tests/test_stream_lines.py`` holds both to the structs' encoding).

A page is one row: up to :data:`PAGE` lines as one UTF-8 ``bytea``, each
ending in a newline, with how many they are and the seq of the last. The
service sends each page's bytes on as they come, so it makes no object per
line, and holds one page at a time whatever the stream's length. All pages
of a stream are read in one read-only REPEATABLE READ snapshot: appends are
serial and commit in seq order, so the lines are a gapless run of the log
(or of the account's entries) as of that snapshot.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple, TypeAlias
from uuid import UUID

from .connection import BEGIN_SNAPSHOT, Conn, transaction

#: Lines per page: enough that a round trip costs little beside building
#: them, few enough that the first page comes at once and a page of the
#: largest lines stays a few megabytes.
PAGE = 1000

#: Where the pages go: called with whole lines, awaited before the next page
#: is read (so a slow reader slows the reading, not the memory).
Send: TypeAlias = Callable[[bytes], Awaitable[object]]
#: Awaited before each page after the first (to let writes go first: see
#: :meth:`~ledger.store.coalescer.Coalescer.idle`).
Pace: TypeAlias = Callable[[], Awaitable[object]]

#: A timestamptz as :func:`~ledger.domain.chain.format_timestamp` writes it.
_TIMESTAMP = """'"' || to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"'"""


def _amount(column: str) -> str:
    """An amount column as a JSON string at the scale ``$4``."""
    return f"""'"' || round({column}, $4::integer)::text || '"'"""


#: One ``/v1/events`` line: ``EventLine``'s fields in its order.
EVENT_LINE = f"""
    '{{"seq":' || seq::text
    || ',"type":' || to_json(type)::text
    || ',"stream_id":"' || stream_id::text
    || '","data":' || data::text
    || ',"metadata":' || metadata::text
    || ',"recorded_at":' || {_TIMESTAMP.format(column="recorded_at")}
    || ',"hash":"' || encode(hash, 'hex') || '"}}'
"""

#: One ``/v1/accounts/{id}/entries`` line, amounts at the scale ``$4``:
#: ``EntryLine``'s fields in its order, ``BalanceOut``'s in the balance.
ENTRY_LINE = f"""
    '{{"seq":' || seq::text
    || ',"transfer_id":"' || transfer_id::text
    || '","type":' || to_json(type)::text
    || ',"side":' || to_json(side)::text
    || ',"amount":' || {_amount("amount")}
    || ',"balance":{{"debits_posted":' || {_amount("debits_posted")}
    || ',"credits_posted":' || {_amount("credits_posted")}
    || ',"debits_pending":' || {_amount("debits_pending")}
    || ',"credits_pending":' || {_amount("credits_pending")}
    || '}},"recorded_at":' || {_TIMESTAMP.format(column="recorded_at")} || '}}'
"""


def _page(line: str, rows: str) -> str:
    """The page of ``line`` over ``rows`` (a query of ``seq`` and the
    columns ``line`` reads, in seq order, at most ``$2`` of them)."""
    return f"""
        SELECT count(*) AS lines, max(seq) AS last_seq,
               convert_to(string_agg(line, E'\\n' ORDER BY seq) || E'\\n', 'UTF8') AS text
        FROM (SELECT seq, {line} AS line FROM ({rows}) AS r) AS page
    """


#: The page of the events after seq ``$1``, at most ``$2``: a range scan of the key.
EVENT_PAGE = _page(EVENT_LINE, "SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")

#: The page of account ``$3``'s entries after seq ``$1``, at most ``$2``,
#: amounts at the scale ``$4``: a range scan of the ``(account_id, seq)`` key.
ENTRY_PAGE = _page(ENTRY_LINE, "SELECT * FROM entries WHERE account_id = $3 AND seq > $1 ORDER BY seq LIMIT $2")


class Sent(NamedTuple):
    """What a stream of lines sent: how many, and the seq of the last
    (the ``after_seq`` it started from, when none)."""

    lines: int
    last_seq: int


async def send_event_lines(
    conn: Conn, send: Send, *, after_seq: int, limit: int | None = None, pace: Pace | None = None
) -> Sent:
    """Send the lines of the events after ``after_seq`` (at most ``limit``), in seq order."""
    return await _send_pages(conn, send, pace, EVENT_PAGE, after_seq, limit)


async def send_entry_lines(
    conn: Conn,
    send: Send,
    account_id: UUID,
    *,
    scale: int,
    after_seq: int,
    limit: int | None = None,
    pace: Pace | None = None,
) -> Sent:
    """Send the lines of the account's entries after ``after_seq`` (at most
    ``limit``), oldest first, amounts at ``scale``."""
    return await _send_pages(conn, send, pace, ENTRY_PAGE, after_seq, limit, account_id, scale)


async def _send_pages(
    conn: Conn, send: Send, pace: Pace | None, query: str, after_seq: int, limit: int | None, *args: object
) -> Sent:
    """Send the pages of ``query`` (after ``$1``, at most ``$2``, then
    ``args``) one after another until one comes short or ``limit`` is
    reached, awaiting ``pace`` (if given) before each after the first."""
    sent = Sent(0, after_seq)
    async with transaction(conn, BEGIN_SNAPSHOT):
        while limit is None or sent.lines < limit:
            if pace is not None and sent.lines:
                await pace()
            size = PAGE if limit is None else min(PAGE, limit - sent.lines)
            page = await conn.fetchrow(query, sent.last_seq, size, *args)
            assert page is not None  # an aggregate: always one row
            if page["lines"]:
                await send(page["text"])
                sent = Sent(sent.lines + page["lines"], page["last_seq"])
            if page["lines"] < size:
                break
    return sent
