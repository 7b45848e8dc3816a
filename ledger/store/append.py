"""The append: decide a batch of commands and record it, in one transaction.

A batch is decided in order with the domain's :class:`Ledger`, against the
accounts and transfers it touches as of a known head of the log (its
:attr:`Batch.basis`), and recorded by one statement (:func:`write`): events
(hash-chained), projections (:mod:`ledger.store.projections`), the new head
and a NOTIFY of it, as data-modifying CTEs with one ``jsonb`` array of rows
per table. That statement moves the head row only from the basis, and writes
nothing unless it did: the head's hash commits to every event before it, and
its epoch moves whenever projections are rewritten outside an append, so an
unmoved head means that nothing the decisions read has changed since. A
large batch (:data:`COPY_FROM` events) is recorded by a transaction that
moves the head the same way first, then COPYs its rows.

Most batches are decided outside any lock (see :mod:`ledger.store.coalescer`),
on what a reading connection loads with one query per table (``= ANY($1)``)
or on what the append before them leaves, and their statement runs alone, a
SERIALIZABLE transaction of its own: the head row's lock stands in for
:data:`LOCK`, so appends stay serial, seq gapless and commit-ordered, and
under group commit an append is one round trip. If the head has moved, the
batch is decided again by :func:`append`: in a SERIALIZABLE transaction that
first takes :data:`LOCK` (see :mod:`ledger.store.writer`), so that its
snapshot sees every earlier append, it reads the head, loads, decides and
writes.

Everything here may run again from the start after a conflict, so it only
reads and writes inside the transaction it is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import msgspec

from ..domain.chain import canonical, event_hash
from ..domain.commands import Command, account_ids, transfer_ids
from ..domain.events import RecordedEvent
from ..domain.ledger import Entry, Ledger, Outcome, Recorded
from ..domain.model import Transfer
from .connection import Conn
from .copying import EVENT_COLUMNS, CopyText, event_line
from .projections import Placeholders, Projection, projection, projection_ctes
from .rows import ACCOUNT_SELECT, TRANSFER_SELECT, account_from_row, transfer_from_row

#: The channel that carries the new head seq after each append.
NOTIFY_CHANNEL = "ledger_events"

#: The append lock: taken first by every append, and by whatever must see no
#: append happen while it runs (repair, rebuild).
LOCK = "LOCK TABLE ledger_head IN EXCLUSIVE MODE"
HEAD = "SELECT seq, hash, epoch FROM ledger_head"
#: Run by whatever rewrites projections outside an append (repair, rebuild),
#: holding :data:`LOCK`: batches decided against what was there before
#: are then decided again.
NEW_EPOCH = "UPDATE ledger_head SET epoch = epoch + 1"
_LOAD_ACCOUNTS = ACCOUNT_SELECT + " WHERE a.id = ANY($1::uuid[])"
_LOAD_TRANSFERS = TRANSFER_SELECT + " WHERE id = ANY($1::uuid[])"

#: Commands decided at a time by :meth:`Batch.deciding` (about a millisecond).
SLICE = 64

#: Events from which a batch is recorded by COPY (:mod:`ledger.store.copying`)
#: in a transaction of a few statements, rather than by one statement that
#: reads its rows from ``jsonb``: COPY costs six round trips more and less of
#: PostgreSQL's time per row, so it pays only from some size of batch on
#: (docs/performance.md, "Constants and their figures").
COPY_FROM = 1024

#: Is the head still the given one? (For a batch that records nothing.)
_HEAD_IS = "SELECT 1 FROM ledger_head WHERE seq = $1 AND hash = $2 AND epoch = $3"


def _move_head(p: Placeholders) -> str:
    """Move the head, only from the one the batch was decided after. The row
    lock makes a concurrent append wait for this one, or this one for it
    (and then find the head moved, or fail to serialize)."""
    return (
        f"UPDATE ledger_head SET seq = {p.one('bigint')}, hash = {p.one('bytea')} "
        f"WHERE seq = {p.one('bigint')} AND hash = {p.one('bytea')} AND epoch = {p.one('bigint')} RETURNING seq"
    )


_MOVE_HEAD = _move_head(Placeholders())
_NOTIFY = "SELECT pg_notify($1, $2)"

_p = Placeholders()
_PROJECTIONS = projection_ctes(_p, when="EXISTS (SELECT FROM moved_head)")
_WRITE = f"""
WITH moved_head AS ({_move_head(_p)}),
{_PROJECTIONS},
new_events AS (
    INSERT INTO events (seq, type, stream_id, data, metadata, recorded_at, hash)
    SELECT seq, type, stream_id, data, metadata, recorded_at, decode(hash, 'base64')
    FROM {
    _p.rows(
        "r", "seq bigint, type text, stream_id uuid, data jsonb, metadata jsonb, recorded_at timestamptz, hash text"
    )
}
    WHERE EXISTS (SELECT FROM moved_head)
)
SELECT pg_notify({_p.one("text")}, {_p.one("text")}) FROM moved_head
"""
del _p


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """The commands of one caller: decided in order, all-or-nothing if ``atomic``."""

    commands: Sequence[Command]
    atomic: bool = False
    #: Stored with each event it causes: who asked (request id, token name).
    metadata: dict[str, Any] = field(default_factory=dict)


class LogHead(NamedTuple):
    """The head of the log: its last seq and hash, and the projections' epoch."""

    seq: int
    hash: bytes
    epoch: int


class Batch:
    """Requests decided in order against the accounts and transfers of a
    :class:`Ledger`, starting at a known head of the log.

    :meth:`seal` turns what was decided into the rows that record it (see
    :func:`write`). They may be written only while the head of the log is
    still :attr:`basis`: the decisions assumed it.
    """

    def __init__(self, ledger: Ledger, basis: LogHead) -> None:
        self.ledger = ledger
        #: The head the requests are decided against (``ledger.head`` is its seq).
        self.basis = basis
        #: The head once they are recorded (set by :meth:`seal`).
        self.head = self.basis
        #: One list of outcomes per request, in order.
        self.results: list[list[Outcome]] = []
        #: The projections' rows, once sealed (None: nothing to record).
        self.projection: Projection | None = None
        #: Once sealed, if it is recorded by COPY: the events, new transfers
        #: and entries as COPY text (made ahead by :meth:`making_copy_text`,
        #: else while they are sent).
        self.copy_text: tuple[CopyText[dict[str, Any]], CopyText[Transfer], CopyText[Entry]] | None = None
        self._recorded: list[Recorded] = []
        #: The event rows, hash-chained from the basis as they are decided, so
        #: that sealing (between one append and the next) has little left to do.
        self.events: list[dict[str, Any]] = []
        self._last_hash = basis.hash

    @property
    def commands(self) -> int:
        """Commands decided in the batch (one outcome each)."""
        return sum(map(len, self.results))

    @classmethod
    def at(cls, head: LogHead) -> Batch:
        """A batch decided against the log at ``head``, starting from an empty
        ledger (see :func:`load`)."""
        return cls(Ledger(head=head.seq), head)

    @classmethod
    def after(cls, previous: Batch, *, limit: int) -> Batch:
        """A batch decided as if ``previous`` (sealed) were recorded.

        It shares ``previous``'s ledger, which it moves on, while that holds
        at most ``limit`` accounts and transfers; past that, only those
        ``previous`` changed are kept, and the rest are loaded again (see
        :func:`load`). That is sound only if every append before ``previous``
        is recorded: then what ``previous`` changed is all that a reading
        connection may not see yet.
        """
        ledger = previous.ledger
        if ledger.size > limit:
            accounts, transfers = previous._changed()
            ledger = Ledger(
                [ledger.accounts[i] for i in accounts], [ledger.transfers[i] for i in transfers], head=ledger.head
            )
        return cls(ledger, previous.head)

    def _changed(self) -> tuple[set[UUID], set[UUID]]:
        """The ids of the accounts and of the transfers the batch changed."""
        accounts: set[UUID] = set()
        transfers: set[UUID] = set()
        for outcome in self._recorded:
            subject = outcome.subject
            if isinstance(subject, Transfer):
                transfers.add(subject.id)
                accounts.update((subject.debit_account_id, subject.credit_account_id))
            else:
                accounts.add(subject.id)
        return accounts, transfers

    def decide(self, requests: Sequence[AppendRequest], *, now: datetime) -> None:
        """Decide ``requests`` after those already in the batch. The ledger
        must hold every account and transfer they touch (see :func:`load`)."""
        for _ in self.deciding(requests, now=now):
            pass

    def deciding(self, requests: Sequence[AppendRequest], *, now: datetime) -> Iterator[None]:
        """:meth:`decide` a slice at a time: pauses (yields) after each
        :data:`SLICE` commands of a request, so that a caller on an event
        loop can let other work run in between. An atomic request is decided
        whole: its commands stand or fall together."""
        for r in requests:
            if r.atomic:
                outcomes = self._keep(self.ledger.execute_all(r.commands, now=now, metadata=r.metadata, atomic=True))
            else:
                outcomes = []
                for start in range(0, len(r.commands), SLICE):
                    if outcomes:
                        yield
                    commands = r.commands[start : start + SLICE]
                    outcomes += self._keep(self.ledger.execute_all(commands, now=now, metadata=r.metadata))
            self.results.append(outcomes)

    def _keep(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Keep what ``outcomes`` (final) record, with their event rows."""
        recorded = [o for o in outcomes if isinstance(o, Recorded)]
        self._recorded += recorded
        self._last_hash = _add_event_rows(self.events, [o.record for o in recorded], self._last_hash)
        return outcomes

    def seal(self) -> Batch:
        """Compute the rows that record the batch; decide nothing more."""
        if self._recorded and self.projection is None:
            self.projection = projection(self.ledger, [(o.record, o.entries) for o in self._recorded])
            self.head = self.basis._replace(seq=self.ledger.head, hash=self._last_hash)
            if len(self.events) >= COPY_FROM:
                events = CopyText("events", EVENT_COLUMNS, event_line, self.events)
                self.copy_text = (events, *self.projection.copy_text())
        return self

    def making_copy_text(self) -> Iterator[None]:
        """Make the COPY text of a sealed batch (if it is recorded by COPY),
        pausing (yielding) after each chunk: for whoever seals it ahead of
        its append, so that the append only sends it."""
        for text in self.copy_text or ():
            yield from text.making()


async def load(conn: asyncpg.Connection, requests: Sequence[AppendRequest], ledger: Ledger) -> None:
    """Add to ``ledger`` the transfers and accounts ``requests`` touch that it
    does not hold yet, as ``conn`` sees them: one query per table."""
    commands = [c for r in requests for c in r.commands]
    missing = [*{i for c in commands for i in transfer_ids(c) if i not in ledger.transfers}]
    transfers = [transfer_from_row(row) for row in await conn.fetch(_LOAD_TRANSFERS, missing)] if missing else []
    ledger.transfers.update((t.id, t) for t in transfers)
    # A decision on a transfer moves that transfer's accounts.
    wanted = {i for c in commands for i in account_ids(c)}
    wanted.update(i for t in transfers for i in (t.debit_account_id, t.credit_account_id))
    missing = [i for i in wanted if i not in ledger.accounts]
    if missing:
        ledger.accounts.update((row["id"], account_from_row(row)) for row in await conn.fetch(_LOAD_ACCOUNTS, missing))


async def read_head(conn: Conn) -> LogHead:
    """The head of the log as ``conn`` sees it."""
    row = await conn.fetchrow(HEAD)
    assert row is not None  # ledger_head holds exactly one row (migration 0001)
    return LogHead(*row)


async def write(conn: asyncpg.Connection, batch: Batch) -> bool:
    """Record the sealed ``batch`` (events, projections, the new head, NOTIFY)
    if the head of the log is still its basis; say whether it was.

    One statement: outside a transaction it is one, with the head row's lock
    in place of :data:`LOCK`. From :data:`COPY_FROM` events, a transaction (or
    the one ``conn`` is in) that moves the head first and then COPYs the rows.
    A batch that records nothing only checks the head.
    """
    if batch.projection is None:
        return await conn.fetchval(_HEAD_IS, *batch.basis) is not None
    moved_head = (batch.head.seq, batch.head.hash, *batch.basis)
    if batch.copy_text is None:
        parameters = (*batch.projection.parameters(), *moved_head, batch.events, NOTIFY_CHANNEL, str(batch.head.seq))
        return await conn.execute(_WRITE, *parameters) == "SELECT 1"
    events, transfers, entries = batch.copy_text
    async with _transaction(conn):
        if await conn.fetchval(_MOVE_HEAD, *moved_head) is None:
            return False
        await events.send(conn)
        await batch.projection.copy(conn, after=batch.basis.seq, text=(transfers, entries))
        await conn.execute(_NOTIFY, NOTIFY_CHANNEL, str(batch.head.seq))
    return True


@contextlib.asynccontextmanager
async def _transaction(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """The transaction ``conn`` is in (that of :func:`append`), else a new
    SERIALIZABLE one."""
    if conn.is_in_transaction():
        yield
    else:
        async with conn.transaction(isolation="serializable"):
            yield


async def append(conn: asyncpg.Connection, requests: Sequence[AppendRequest], *, now: datetime, at: LogHead) -> Batch:
    """Decide ``requests`` in order against the log at head ``at`` and record them.

    Must run in a SERIALIZABLE transaction on ``conn`` that holds :data:`LOCK`.
    """
    batch = Batch.at(at)
    await load(conn, requests, batch.ledger)
    batch.decide(requests, now=now)
    if not await write(conn, batch.seal()):
        raise RuntimeError("the head of the log moved under the append lock")
    return batch


def _add_event_rows(rows: list[dict[str, Any]], records: list[RecordedEvent], previous_hash: bytes) -> bytes:
    """Add the rows of ``records`` to ``rows``, each hash-chained to the one
    before (the first to ``previous_hash``); return the last hash.

    Data and metadata are encoded once, canonically, for the hash and the
    row alike (the events of a request share its metadata)."""
    encoded_metadata: tuple[object, msgspec.Raw] | None = None
    for record in records:
        event = record.event
        stream_id = event.stream_id
        data = msgspec.Raw(canonical(event))
        if encoded_metadata is None or encoded_metadata[0] is not record.metadata:
            encoded_metadata = (record.metadata, msgspec.Raw(canonical(record.metadata)))
        metadata = encoded_metadata[1]
        previous_hash = event_hash(
            previous_hash,
            seq=record.seq,
            type=event.type,
            stream_id=stream_id,
            data=data,
            metadata=metadata,
            recorded_at=record.recorded_at,
        )
        rows.append(
            {
                "seq": record.seq,
                "type": event.type,
                "stream_id": stream_id,
                "data": data,
                "metadata": metadata,
                "recorded_at": record.recorded_at,
                "hash": previous_hash,  # base64 in JSON
            }
        )
    return previous_hash
