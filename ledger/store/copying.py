"""Rows sent by ``COPY … FROM STDIN``, in COPY's text format.

Large appends and the rebuild send their events, transfers and entries this
way: the server reads each value with its type's input function, where rows
given as a ``jsonb`` array (see :mod:`ledger.store.projections`) are first
parsed as JSON and then taken apart key by key, and asyncpg's binary COPY
would encode each ``numeric`` in Python (docs/performance.md, "Constants and
their figures"). The text is made
here (:class:`CopyText`), a chunk of rows at a time: ahead, while the append
before is in flight (see :mod:`ledger.store.coalescer`), or while the chunk
before it is on its way, so that the server reads one while the next is made.

Text format: columns separated by tabs, one row a line, ``\\N`` for NULL,
and a backslash, tab, newline or carriage return inside a value escaped with
a backslash. JSON as msgspec writes it holds no raw control character, so
only its backslashes need escaping. UUIDs go as their 32 hex digits, which
``uuid`` reads as well as the hyphenated form and Python writes faster;
amounts as ``str()`` writes them (``!s``: an f-string would otherwise go
through the slower ``Decimal.__format__``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

import asyncpg
import msgspec

from ..domain.chain import format_timestamp
from ..domain.ledger import Entry
from ..domain.model import Transfer
from .tables import Table

T = TypeVar("T")

_NULL = "\\N"

#: Rows per chunk sent: a few milliseconds of Python, after which the event
#: loop gets a turn.
CHUNK = 1024

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_json_encoder = msgspec.json.Encoder()


def _text(value: str | None) -> str:
    return _NULL if value is None else value.translate(_ESCAPES)


def _json(value: Any) -> str:
    return _json_encoder.encode(value).decode().replace("\\", "\\\\")


def _number(value: Decimal | int | None) -> str:
    return _NULL if value is None else str(value)


def _timestamp(value: datetime | None) -> str:
    return _NULL if value is None else format_timestamp(value)


def _boolean(value: bool) -> str:
    return "t" if value else "f"


class CopyText(Generic[T]):
    """Rows for ``COPY table (columns) FROM STDIN``, each written as its
    ``line`` (the values of the table's columns, tab-separated, with a newline).

    The text is made a chunk of :data:`CHUNK` rows at a time: ahead of the
    COPY (:meth:`making`), or while it is sent, each chunk while the one
    before it is on its way. Whatever was made ahead is sent as it is."""

    def __init__(self, table: Table, line: Callable[[T], str], rows: Sequence[T]) -> None:
        self.table = table
        self._line = line
        self._rows = rows
        self._chunks: list[bytes] = []

    def making(self) -> Iterator[None]:
        """Make the chunks not made yet, pausing (yielding) after each."""
        while self._make_next():
            yield

    def _make_next(self) -> bool:
        start = len(self._chunks) * CHUNK
        if start >= len(self._rows):
            return False
        self._chunks.append("".join(map(self._line, self._rows[start : start + CHUNK])).encode())
        return True

    async def send(self, conn: asyncpg.Connection) -> None:
        """COPY the rows on ``conn``."""

        async def chunks() -> AsyncIterator[bytes]:
            for index in itertools.count():
                if index == len(self._chunks):
                    if index:
                        await asyncio.sleep(0)
                    if not self._make_next():
                        return
                yield self._chunks[index]

        await conn.copy_to_table(self.table.name, source=chunks(), columns=self.table.columns)


# Each line writes its table's columns in order (tests/test_tables.py checks it).


def event_line(row: dict[str, Any]) -> str:
    """An event row as :mod:`ledger.store.write_path` keeps it (a dict of its columns)."""
    return (
        f"{row['seq']}\t{row['type']}\t{row['stream_id'].hex}\t{_json(row['data'])}\t{_json(row['metadata'])}\t"
        f"{_timestamp(row['recorded_at'])}\t\\\\x{row['hash'].hex()}\n"
    )


def transfer_line(t: Transfer) -> str:
    return (
        f"{t.id.hex}\t{t.debit_account_id.hex}\t{t.credit_account_id.hex}\t{t.amount!s}\t{_text(t.currency)}\t"
        f"{_text(t.code)}\t{_json(t.metadata)}\t{_boolean(t.pending)}\t{_number(t.timeout_seconds)}\t{t.status}\t{t.seq}\t"
        f"{_timestamp(t.created_at)}\t{_timestamp(t.expires_at)}\t{_number(t.posted_amount)}\t{_number(t.decided_seq)}\t"
        f"{_NULL if t.reverses is None else t.reverses.hex}\t{t.reversed_amount!s}\n"
    )


def entry_line(e: Entry) -> str:
    b = e.balance
    return (
        f"{e.account_id.hex}\t{e.seq}\t{e.transfer_id.hex}\t{e.type}\t{e.side}\t{e.amount!s}\t"
        f"{b.debits_posted!s}\t{b.credits_posted!s}\t{b.debits_pending!s}\t{b.credits_pending!s}\t"
        f"{_timestamp(e.recorded_at)}\n"
    )
