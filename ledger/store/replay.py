"""Reading the event log back, in seq order, checking its hash chain.

The log is the truth: a fold of it gives what the stored projections must
hold. Reading goes through a server-side cursor inside the caller's
transaction, so memory does not grow with the number of events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
import msgspec

from ..domain.chain import GENESIS, canonical, chained, event_bytes
from ..domain.events import RecordedEvent, event_from_data
from ..domain.ledger import Entry, Ledger
from .connection import BEGIN_SNAPSHOT, Conn, transaction
from .head import LogHead, read_head
from .tables import EVENTS, MAX_BIGINT

if TYPE_CHECKING:
    from .tree import Growth

#: The whole log, in seq order.
LOG = EVENTS.select() + " ORDER BY seq"
#: The events $1 to $2, in seq order.
_RANGE = EVENTS.select() + " WHERE seq BETWEEN $1 AND $2 ORDER BY seq"
#: Events checked between two reports of progress.
PROGRESS_EVERY = 10_000

#: How many events a long fold applies between dropping settled transfers.
FORGET_EVERY = 10_000


def row_bytes(row: asyncpg.Record) -> bytes:
    """The canonical bytes of the event stored as ``row`` (an :data:`EVENTS` row)."""
    return event_bytes(
        seq=row["seq"],
        type=row["type"],
        stream_id=row["stream_id"],
        data=row["data"],
        metadata=row["metadata"],
        recorded_at=row["recorded_at"],
    )


class ChainBroken(Exception):
    def __init__(self, seq: int) -> None:
        super().__init__(f"the event log's hash chain breaks at seq {seq}")
        self.seq = seq


class EventUnappliable(Exception):
    """The event stored at ``seq`` is not one the ledger could have recorded
    after the events before it: ``reason`` says why."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"the event at seq {seq} cannot be applied: {reason}")
        self.seq = seq
        self.reason = reason


@dataclass(slots=True)
class ChainCheck:
    """The hash chain, verified row by row: each event's hash must follow from
    its predecessor's, seq must run 1, 2, 3… and the last event must be the
    head. ``first_bad_seq`` is the first seq where that fails (a missing
    event's own seq, for a deletion)."""

    previous: bytes = GENESIS
    next_seq: int = 1
    first_bad_seq: int | None = None
    #: How many events were checked.
    checked: int = 0
    #: The first event :meth:`read` found whose data is not an event of its
    #: type (one :meth:`Ledger.apply` could not be given), and why.
    unreadable: tuple[int, str] | None = None
    #: The canonical bytes of the last event checked.
    entry: bytes = field(default=b"", compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None

    def check(self, row: asyncpg.Record) -> None:
        if row["seq"] != self.next_seq:
            self._bad(self.next_seq)
        self.entry = row_bytes(row)
        if chained(self.previous, self.entry) != row["hash"]:
            self._bad(row["seq"])
        self.previous = row["hash"]
        self.next_seq = row["seq"] + 1
        self.checked += 1

    async def read(
        self, conn: Conn, lo: int = 1, hi: int = MAX_BIGINT, *, every: Callable[[int], None] | None = None
    ) -> None:
        """Check the stored events ``lo`` to ``hi`` (default: all), in seq
        order, through a server-side cursor (memory does not grow with them):
        their chain, and that each one's data is an event of its type.
        ``every(checked)`` is told the count every :data:`PROGRESS_EVERY`
        events. Must run inside a transaction (a cursor lives in one)."""
        async for row in conn.cursor(_RANGE, lo, hi, prefetch=1000):
            self.check(row)
            if self.unreadable is None:
                self.unreadable = _unreadable(row)
            if every is not None and self.checked % PROGRESS_EVERY == 0:
                every(self.checked)

    def ends_at(self, last: int) -> None:
        """After the rows up to ``last``: a seq missing at the end is bad."""
        if self.next_seq <= last:
            self._bad(self.next_seq)

    def stored_past(self, seq: int | None) -> None:
        """``seq``: the first event stored after the last one checked, if
        there is one; the head covers none, so it is bad."""
        if seq is not None:
            self._bad(seq)

    def finish(self, head: LogHead) -> None:
        """After the last event: it must be the head the appends recorded."""
        if self.next_seq - 1 != head.seq or self.previous != head.hash:
            self._bad(min(self.next_seq, head.seq))

    def broken(self) -> ChainBroken:
        """The error to raise for a chain that is not :attr:`ok`."""
        assert self.first_bad_seq is not None
        return ChainBroken(self.first_bad_seq)

    def _bad(self, seq: int) -> None:
        if self.first_bad_seq is None:
            self.first_bad_seq = seq


def _unreadable(row: asyncpg.Record) -> tuple[int, str] | None:
    """Why the event stored as ``row`` is not one of its type, if it is not."""
    try:
        event_from_data(row["type"], row["data"])
    except KeyError:
        return row["seq"], f"its type {row['type']!r} is not one the ledger records"
    except msgspec.ValidationError as error:
        return row["seq"], f"its data is not a {row['type']} event: {error}"
    return None


def recorded(row: asyncpg.Record) -> RecordedEvent:
    """The event stored as ``row`` (an :data:`EVENTS` row)."""
    return RecordedEvent(
        seq=row["seq"],
        event=event_from_data(row["type"], row["data"]),
        recorded_at=row["recorded_at"],
        metadata=row["metadata"],
    )


@dataclass(slots=True)
class Replay:
    """The fold of the log into ``ledger``, a stored row at a time, in seq
    order (:data:`LOG`): each row checked against the hash chain first
    (:class:`ChainBroken` at the first bad seq, before that event is
    applied), then added to ``growth`` (if given) from the bytes its hash
    was checked on, then applied."""

    ledger: Ledger
    growth: Growth | None = None
    chain: ChainCheck = field(default_factory=ChainCheck)
    #: Events after this seq, if given, were imported, written outside the
    #: service: each must also be written as the service writes its event
    #: (canonically, amounts and ids as strings, no field more or less).
    imported_after: int | None = None

    def apply(self, row: asyncpg.Record) -> tuple[RecordedEvent, tuple[Entry, ...]]:
        """The event of ``row``, applied, with the entries it made; raises
        :class:`EventUnappliable` for one the ledger cannot take."""
        self.chain.check(row)
        if not self.chain.ok:
            raise self.chain.broken()
        if self.growth is not None:
            self.growth.add(row["seq"], self.chain.entry)
        try:
            record = recorded(row)
        except (KeyError, msgspec.ValidationError):
            seq, reason = _unreadable(row) or (row["seq"], "it cannot be read")
            raise EventUnappliable(seq, reason) from None
        imported = self.imported_after is not None and row["seq"] > self.imported_after
        if imported and canonical(record.event) != canonical(row["data"]):
            raise EventUnappliable(row["seq"], f"its data is not written as the ledger writes a {row['type']} event")
        try:
            return record, self.ledger.apply(record)
        except KeyError as error:
            raise EventUnappliable(row["seq"], f"it names {error.args[0]}, which no event before it made") from None
        except (ValueError, ArithmeticError) as error:
            raise EventUnappliable(row["seq"], f"{type(error).__name__}: {error}") from None

    def finish(self, head: LogHead) -> None:
        """After the last row: :class:`ChainBroken` if it was not ``head``."""
        self.chain.finish(head)
        if not self.chain.ok:
            raise self.chain.broken()


async def replayed(
    conn: Conn, ledger: Ledger, *, growth: Growth | None = None, prefetch: int = 1000
) -> AsyncIterator[tuple[RecordedEvent, tuple[Entry, ...]]]:
    """Every stored event applied to ``ledger`` by a :class:`Replay`, each
    yielded with the entries it made; after the last, :class:`ChainBroken`
    if it is not the head. Must run inside a transaction, whose snapshot it
    reads."""
    head = await read_head(conn)
    replay = Replay(ledger, growth)
    async for row in conn.cursor(LOG, prefetch=prefetch):
        yield replay.apply(row)
    replay.finish(head)


async def fold_log(conn: Conn, *, prefetch: int = 1000) -> Ledger:
    """The balances of every account, replayed from the whole log in one
    snapshot. Raises :class:`ChainBroken` at the first bad seq.

    The ledger holds every account but only the transfers still pending.
    """
    ledger = Ledger()
    async with transaction(conn, BEGIN_SNAPSHOT):
        async for record, _ in replayed(conn, ledger, prefetch=prefetch):
            if record.seq % FORGET_EVERY == 0:
                ledger.forget_settled_transfers()
    return ledger
