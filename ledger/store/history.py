"""Long reads of the history: an account's entries, the global event feed, a
balance as of a past seq.

Streams read through a server-side cursor inside a read-only REPEATABLE READ
transaction (a cursor lives only in a transaction, and one snapshot makes the
stream consistent). Rows are yielded one by one; the caller writes them out
and awaits the write, so a slow reader slows the cursor instead of filling
memory. Both queries are range scans of a primary key: ``entries`` is keyed
``(account_id, seq)``, ``events`` by ``seq``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from uuid import UUID

import asyncpg

from ..domain.model import Balance
from .connection import Conn
from .head import read_head
from .rows import balance_from_row

#: An account's entries after a seq: a range scan of the (account_id, seq) key.
ENTRIES = """
    SELECT seq, transfer_id, type, side, amount, debits_posted, credits_posted,
           debits_pending, credits_pending, recorded_at
    FROM entries WHERE account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""
_EVENTS = """
    SELECT seq, type, stream_id, data::text AS data, metadata::text AS metadata, recorded_at, hash
    FROM events WHERE seq > $1 ORDER BY seq LIMIT $2
"""
_BALANCE_AS_OF = """
    SELECT debits_posted, credits_posted, debits_pending, credits_pending
    FROM entries WHERE account_id = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1
"""
_OPENED = "SELECT seq FROM accounts WHERE id = $1"

#: Rows fetched from the server per round trip of a cursor.
PREFETCH = 1000


def entries(conn: Conn, account_id: UUID, *, after_seq: int, limit: int | None) -> AsyncGenerator[asyncpg.Record, None]:
    """The account's entries after ``after_seq``, oldest first, at most ``limit``."""
    return _in_snapshot(conn, ENTRIES, account_id, after_seq, limit)


def events(conn: Conn, *, after_seq: int, limit: int | None) -> AsyncGenerator[asyncpg.Record, None]:
    """The log's events after ``after_seq`` in seq order, at most ``limit``.

    Appends are serial and commit in seq order, so a snapshot always holds a
    gapless prefix of the log: resuming after the last seq seen misses nothing.
    """
    return _in_snapshot(conn, _EVENTS, after_seq, limit)


async def _in_snapshot(conn: Conn, query: str, *args: object) -> AsyncGenerator[asyncpg.Record, None]:
    """The rows of ``query`` through a cursor in a read-only REPEATABLE READ transaction."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor(query, *args, prefetch=PREFETCH):
            yield row


async def balance_as_of(conn: Conn, account_id: UUID, seq: int) -> Balance:
    """The account's balance right after event ``seq``: that of its last entry
    at or before ``seq``, all zero before its first."""
    row = await conn.fetchrow(_BALANCE_AS_OF, account_id, seq)
    return Balance() if row is None else balance_from_row(row)


async def opened_seq(conn: Conn, account_id: UUID) -> int | None:
    """The seq of the event that opened the account."""
    seq: int | None = await conn.fetchval(_OPENED, account_id)
    return seq


async def head_seq(conn: Conn) -> int:
    """The seq of the last event, as ``conn`` sees it."""
    return (await read_head(conn)).seq
