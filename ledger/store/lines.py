"""The NDJSON lines of ``/v1/events`` and ``/v1/accounts/{id}/entries``,
built by PostgreSQL and sent by ``COPY (…) TO STDOUT``.

Each line is the JSON text the response structs (``EventLine``,
``EntryLine`` in :mod:`ledger.api.responses`) encode to, byte for byte: the
same keys in the same order, no blanks, ``data`` and ``metadata`` as jsonb
writes them, amounts at the account's scale, UUIDs in lower case, and
timestamps as :func:`~ledger.domain.chain.format_timestamp` writes them
(``tests/test_stream_lines.py`` holds both to the structs' encoding). The
service passes the text on in the chunks it arrives in: it makes no object
per row, so a stream costs the same memory whatever its length.

COPY takes no bind parameters; asyncpg's ``copy_from_query`` has the server
quote each argument (``quote_literal``) into the statement's text, so the
queries here are written with ``$n`` like any other.

COPY runs in CSV format with a quote and a delimiter that JSON text never
holds raw (it escapes every control character), so each line goes out as
PostgreSQL wrote it, unescaped, followed by a newline.
"""

from __future__ import annotations

from typing import Any, TypeAlias
from uuid import UUID

from .connection import Conn

#: How COPY writes (and an import reads) the lines: CSV quoted and delimited
#: by control characters that no line can hold, so that each goes as it is.
QUOTE, DELIMITER = "\x01", "\x02"

#: Where the bytes go, as asyncpg's ``output`` takes it: a path, a binary
#: file, or an async callable taking bytes (awaited before the next chunk).
Output: TypeAlias = Any

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

#: The events after ``$1``, in seq order, at most ``$2`` (none: all of them).
EVENT_LINES = f"""
    SELECT {EVENT_LINE} FROM events WHERE seq > $1::bigint ORDER BY seq LIMIT $2::bigint
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

#: The entries of account ``$1`` after seq ``$2``, oldest first, at most
#: ``$3``: a range scan of the ``(account_id, seq)`` key.
ENTRY_LINES = f"""
    SELECT {ENTRY_LINE} FROM entries
    WHERE account_id = $1::uuid AND seq > $2::bigint ORDER BY seq LIMIT $3::bigint
"""


async def copy_event_lines(conn: Conn, output: Output, *, after_seq: int, limit: int | None = None) -> int:
    """Write the lines of the events after ``after_seq`` (at most ``limit``)
    to ``output``, in seq order; return how many. One statement, so one
    snapshot: the lines are a gapless run of the log."""
    return await _copy(conn, output, EVENT_LINES, after_seq, limit)


async def copy_entry_lines(
    conn: Conn, output: Output, account_id: UUID, *, scale: int, after_seq: int, limit: int | None = None
) -> int:
    """Write the lines of the account's entries after ``after_seq`` (at most
    ``limit``), oldest first, amounts at ``scale``, to ``output``; return how many."""
    return await _copy(conn, output, ENTRY_LINES, account_id, after_seq, limit, scale)


#: Both queries read their key in order; a sort would hold the first line
#: back until the last row is read, so the planner is not offered one.
_NO_SORT = "SET LOCAL enable_sort = off"


async def _copy(conn: Conn, output: Output, query: str, *args: object) -> int:
    async with conn.transaction(readonly=True):
        await conn.execute(_NO_SORT)
        status: str = await conn.copy_from_query(
            query, *args, output=output, format="csv", quote=QUOTE, delimiter=DELIMITER
        )
    return int(status.split()[-1])
