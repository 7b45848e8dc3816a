"""The write path: the states of a batch of requests, and its transitions.

Every write goes through these states, in this order (docs/architecture.md,
"The write path", draws them)::

    Pending ──decide──▶ Decided ──seal──▶ Sealed ──write──▶ Committed
       │                                    │
       │                                    └─ Stale: decided again, as Pending
       └──────────decide_under_lock──────────────────────▶ Committed

- :class:`Pending`: requests taken from the queue, nothing decided. Appended
  by :func:`decide_under_lock`: in a transaction holding the append lock, it
  reads the head, loads, decides, seals and writes.
- :class:`Decided`: every request has its outcomes, decided in order with
  the domain's :class:`Ledger` as of a known head of the log (its
  :attr:`~Decided.basis`), outside any lock, taking the transfers it
  creates for new (see :func:`load`). More requests may be decided into it
  until it is sealed.
- :class:`Sealed`: the events, hashes and rows that record it are fixed,
  and so is the head it leaves (:attr:`~Sealed.after`). Its rows are one of
  :class:`Statement`, :class:`Copy` or :class:`Unchanged`.
- :class:`Committed`: the transaction that recorded it has committed.

:func:`write` records a :class:`Sealed` batch only while the head of the log
is still its basis and no transfer it creates is recorded already, and
writes nothing otherwise (:class:`Stale`): the head's hash commits to every
event before it, and its epoch moves whenever projections are rewritten
outside an append, so an unmoved head means that nothing the decisions read
has changed since; the transfers' primary key refuses an id recorded
before. Statement rows are one
statement of data-modifying CTEs (events, hash-chained; projections, see
:mod:`ledger.store.projections`; the head; a NOTIFY of it), which runs
alone, a SERIALIZABLE transaction of its own: the head row's lock stands in
for the append lock, so appends stay serial, seq gapless and commit-ordered,
and an append is one round trip. Copy rows (from :data:`COPY_FROM` events)
go in a transaction that moves the head the same way first, then COPYs them.

Everything here may run again from the start after a conflict, so it only
reads and writes inside the transaction it is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from ..domain.chain import canonical, chained, event_bytes
from ..domain.commands import Command, account_ids, created_transfer, transfer_ids
from ..domain.events import RecordedEvent
from ..domain.ledger import Entry, Ledger, Outcome, Recorded, Refused
from ..domain.merkle import Frontier, Node, leaf_hash
from ..domain.model import Transfer
from .connection import transaction
from .copying import CopyText, event_line
from .head import NOTIFY_CHANNEL, LogHead
from .projections import Projection, projection, projection_ctes
from .rows import ACCOUNT_SELECT, TRANSFER_SELECT, account_from_row, transfer_from_row
from .tables import EVENTS, Placeholders
from .tree import STORED_FROM, insert_subtrees, read_tip, subtree_arguments, write_subtrees

_LOAD_ACCOUNTS = ACCOUNT_SELECT + " WHERE a.id = ANY($1::uuid[])"
_LOAD_TRANSFERS = TRANSFER_SELECT + " WHERE id = ANY($1::uuid[])"

#: Commands decided at a time by :meth:`Decided.deciding` (about a millisecond).
SLICE = 64

#: Events from which a batch is sealed as :class:`Copy` rows, written by COPY
#: (:mod:`ledger.store.copying`) in a transaction of a few statements, rather
#: than as one :class:`Statement` that reads its rows from ``jsonb``: COPY
#: costs six round trips more and less of PostgreSQL's time per row, so it
#: pays only from some size of batch on (docs/performance.md, "Constants and
#: their figures"). Both write the same rows (tests/test_copy.py).
COPY_FROM = 1024


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """The commands of one caller: decided in order, all-or-nothing if ``atomic``."""

    commands: Sequence[Command]
    atomic: bool = False
    #: Stored with each event it causes: who asked (request id, token name).
    metadata: dict[str, Any] = field(default_factory=dict)


# -- the states ---------------------------------------------------------------


@dataclass(slots=True)
class Pending:
    """Requests taken from the queue, nothing decided: to be decided under
    the append lock (:func:`decide_under_lock`)."""

    requests: list[AppendRequest] = field(default_factory=list)


class Decided:
    """Requests decided in order against the accounts and transfers of
    :attr:`ledger`, as of the head of the log :attr:`basis` (whose Merkle
    tree is :attr:`tree`).

    More requests are decided into it by :meth:`deciding` until :func:`seal`
    fixes it; what it decided may be written only while the head of the log
    is still :attr:`basis`, since the decisions assumed it.
    """

    def __init__(self, ledger: Ledger, basis: LogHead, tree: Frontier) -> None:
        assert ledger.last_seq == basis.seq == tree.size, "a ledger decides from the head it reflects"
        self.ledger = ledger
        #: The head the requests are decided against, and the log's tree there.
        self.basis = basis
        self.tree = tree
        #: The requests, in order, and one list of outcomes for each.
        self.requests: list[AppendRequest] = []
        self.results: list[list[Outcome]] = []
        #: The event rows, hash-chained from the basis as they are decided.
        self.events: list[dict[str, Any]] = []
        #: The outcomes that record an event, in order, and the last event's hash.
        self.recorded: list[Recorded] = []
        self.last_hash = basis.hash
        #: The events' Merkle leaf hashes, in order.
        self.leaves: list[bytes] = []
        #: The transfers that refused commands would have created, which
        #: the ledger did not hold: taken for new without a look (see
        #: :func:`load`), the refusal is wrong if one was recorded already
        #: (the command repeats it), so :func:`write` checks that none was.
        self.refused_unseen: list[UUID] = []
        #: Set by :func:`seal`, after which nothing more is decided into it.
        self.sealed = False

    @classmethod
    def at(cls, head: LogHead, tree: Frontier) -> Decided:
        """Nothing decided yet, against the log at ``head`` (with ``tree``),
        starting from an empty ledger (see :func:`load`)."""
        return cls(Ledger(last_seq=head.seq), head, tree)

    @classmethod
    def after(cls, previous: Sealed, *, limit: int) -> Decided:
        """Nothing decided yet, as if ``previous`` were recorded.

        It shares ``previous``'s ledger, which it moves on, while that holds
        at most ``limit`` transfers and at most ``limit`` accounts; past
        that, only the transfers ``previous`` changed are kept, and of the
        accounts, all while they are at most ``limit``, else only those
        ``previous`` changed (a transfer kept needs its two accounts, which
        ``previous`` changed with it); the rest are loaded again (see
        :func:`load`). That is sound only if every append before ``previous``
        is recorded: then what ``previous`` changed is all that a reading
        connection may not see yet, and an account kept was moved by every
        batch of the chain since it was read, each written only on the head
        it was decided after.
        """
        ledger = previous.decided.ledger
        if len(ledger.accounts) > limit or len(ledger.transfers) > limit:
            accounts, transfers = previous.decided.changed()
            ledger = Ledger(
                ledger.accounts.values() if len(ledger.accounts) <= limit else [ledger.accounts[i] for i in accounts],
                [ledger.transfers[i] for i in transfers],
                last_seq=ledger.last_seq,
            )
        return cls(ledger, previous.after, previous.tree)

    @property
    def commands(self) -> int:
        """Commands decided (one outcome each)."""
        return sum(map(len, self.results))

    def changed(self) -> tuple[set[UUID], set[UUID]]:
        """The ids of the accounts and of the transfers the batch changed."""
        accounts: set[UUID] = set()
        transfers: set[UUID] = set()
        for outcome in self.recorded:
            subject = outcome.subject
            if isinstance(subject, Transfer):
                transfers.add(subject.id)
                accounts.update((subject.debit_account_id, subject.credit_account_id))
            else:
                accounts.add(subject.id)
        return accounts, transfers

    def decide(self, requests: Sequence[AppendRequest], *, now: datetime) -> None:
        """Decide ``requests`` after those already decided. The ledger must
        hold every account and transfer they touch (see :func:`load`)."""
        for _ in self.deciding(requests, now=now):
            pass

    def deciding(self, requests: Sequence[AppendRequest], *, now: datetime) -> Iterator[None]:
        """:meth:`decide` a slice at a time: pauses (yields) after each
        :data:`SLICE` commands of a request, so that a caller on an event
        loop can let other work run in between. An atomic request is decided
        whole: its commands stand or fall together."""
        assert not self.sealed, "a sealed batch decides nothing more"
        for r in requests:
            self.requests.append(r)
            if r.atomic:
                outcomes = self._keep(
                    r.commands, self.ledger.decide_all(r.commands, now=now, metadata=r.metadata, atomic=True)
                )
            else:
                outcomes = []
                for start in range(0, len(r.commands), SLICE):
                    if outcomes:
                        yield
                    commands = r.commands[start : start + SLICE]
                    outcomes += self._keep(commands, self.ledger.decide_all(commands, now=now, metadata=r.metadata))
            self.results.append(outcomes)

    def _keep(self, commands: Sequence[Command], outcomes: list[Outcome]) -> list[Outcome]:
        """Keep what ``outcomes`` (final, one per command) record, with their
        event rows, and what their refusals took for new."""
        for command, outcome in zip(commands, outcomes, strict=True):
            if isinstance(outcome, Refused):
                new = created_transfer(command)
                if new is not None and new not in self.ledger.transfers:
                    self.refused_unseen.append(new)
        recorded = [o for o in outcomes if isinstance(o, Recorded)]
        self.recorded += recorded
        self.last_hash = _add_event_rows(self.events, self.leaves, [o.record for o in recorded], self.last_hash)
        return outcomes


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The rows of a batch that records nothing: writing it only checks that
    the head is still its basis, on which its refusals and replays stand."""


@dataclass(frozen=True, slots=True)
class Statement:
    """The rows of a batch written as one statement (see :data:`_WRITE`)."""

    projection: Projection
    events: list[dict[str, Any]]
    #: The Merkle subtrees the events complete.
    subtrees: list[Node]


@dataclass(frozen=True, slots=True)
class Copy:
    """The rows of a batch written by COPY: the projections' other rows, and
    the events, new transfers and entries as COPY text (made ahead by
    :meth:`making`, else while they are sent)."""

    projection: Projection
    events: CopyText[dict[str, Any]]
    transfers: CopyText[Transfer]
    entries: CopyText[Entry]
    subtrees: list[Node]

    def making(self) -> Iterator[None]:
        """Make the COPY text, pausing (yielding) after each chunk: for whoever
        seals a batch ahead of its append, so that the append only sends it."""
        for text in (self.events, self.transfers, self.entries):
            yield from text.making()


@dataclass(frozen=True, slots=True)
class Sealed:
    """A decided batch whose rows are fixed: nothing more is decided into it."""

    decided: Decided
    #: The head of the log once it is recorded (its basis if it records
    #: nothing), and the log's tree then.
    after: LogHead
    tree: Frontier
    rows: Statement | Copy | Unchanged

    @property
    def requests(self) -> list[AppendRequest]:
        return self.decided.requests


@dataclass(frozen=True, slots=True)
class Stale:
    """:func:`write` found that the batch's decisions no longer stand, and
    wrote nothing: the head of the log had moved on from its basis, or a
    transfer the batch took for new was recorded already (a replay of one
    its ledger did not hold). Its requests must be decided again."""

    sealed: Sealed

    def again(self) -> Pending:
        return Pending(list(self.sealed.requests))


@dataclass(frozen=True, slots=True)
class Committed:
    """A batch recorded by a committed transaction."""

    sealed: Sealed

    @property
    def results(self) -> list[list[Outcome]]:
        """One list of outcomes per request, in order."""
        return self.sealed.decided.results

    @property
    def commands(self) -> int:
        return self.sealed.decided.commands

    @property
    def head(self) -> LogHead:
        """The head of the log the commit left."""
        return self.sealed.after


# -- the transitions ----------------------------------------------------------


async def load(
    conn: asyncpg.Connection, requests: Sequence[AppendRequest], ledger: Ledger, *, created: bool = True
) -> None:
    """Add to ``ledger`` the transfers and accounts ``requests`` touch that it
    does not hold yet, as ``conn`` sees them: one query per table. (What
    deciding needs first; see :meth:`Decided.deciding`.)

    Without ``created``, the transfers the commands would create are not
    looked for: the batch takes those it does not hold for new, and
    :func:`write` finds it :class:`Stale` if one was recorded already. Most
    such ids are new, so a batch decided outside the lock then reads
    nothing unless it meets an account its ledger lacks."""
    commands = [c for r in requests for c in r.commands]
    missing = [*{i for c in commands for i in transfer_ids(c, created=created) if i not in ledger.transfers}]
    transfers = [transfer_from_row(row) for row in await conn.fetch(_LOAD_TRANSFERS, missing)] if missing else []
    ledger.transfers.update((t.id, t) for t in transfers)
    # A decision on a transfer moves that transfer's accounts.
    wanted = {i for c in commands for i in account_ids(c)}
    wanted.update(i for t in transfers for i in (t.debit_account_id, t.credit_account_id))
    missing = [i for i in wanted if i not in ledger.accounts]
    if missing:
        ledger.accounts.update((row["id"], account_from_row(row)) for row in await conn.fetch(_LOAD_ACCOUNTS, missing))


def seal(decided: Decided, *, copy_from: int = COPY_FROM) -> Sealed:
    """Fix the rows that record ``decided``: :class:`Copy` rows from
    ``copy_from`` events, else a :class:`Statement` (:class:`Unchanged` if
    it records nothing). Nothing more is decided into it."""
    decided.sealed = True
    if not decided.recorded:
        return Sealed(decided, decided.basis, decided.tree, Unchanged())
    rows = projection(decided.ledger, [(o.record, o.entries) for o in decided.recorded])
    after = decided.basis._replace(seq=decided.ledger.last_seq, hash=decided.last_hash)
    tree, subtrees = decided.tree.append(decided.leaves, from_level=STORED_FROM)
    if len(decided.events) < copy_from:
        return Sealed(decided, after, tree, Statement(rows, decided.events, subtrees))
    events = CopyText(EVENTS, event_line, decided.events)
    return Sealed(decided, after, tree, Copy(rows, events, *rows.copy_text(), subtrees))


def _basis_stands(p: Placeholders) -> str:
    """The condition on the head row that the batch's decisions still
    stand: the head is the one they were decided after, and none of the
    transfers their refusals took for new is recorded."""
    return (
        f"seq = {p.one('bigint', 'basis_seq')} AND hash = {p.one('bytea', 'basis_hash')} "
        f"AND epoch = {p.one('bigint', 'basis_epoch')} "
        f"AND NOT EXISTS (SELECT FROM transfers WHERE id = ANY({p.array('uuid', 'refused_unseen')}))"
    )


def _move_head(p: Placeholders) -> str:
    """Move the head, only while the batch's basis stands. The row lock
    makes a concurrent append wait for this one, or this one for it (and
    then find the head moved, or fail to serialize)."""
    return (
        f"UPDATE ledger_head SET seq = {p.one('bigint', 'seq')}, hash = {p.one('bytea', 'hash')} "
        f"WHERE {_basis_stands(p)} RETURNING seq"
    )


_move = Placeholders()
_MOVE_HEAD = _move_head(_move)
_standing = Placeholders()
_BASIS_STANDS = f"SELECT 1 FROM ledger_head WHERE {_basis_stands(_standing)}"
_NOTIFY = "SELECT pg_notify($1, $2)"

#: The events as JSON carry their hash as base64 text.
_EVENT_ROWS = EVENTS.record_columns(hash="text")
_EVENT_VALUES = ", ".join("decode(hash, 'base64')" if c == "hash" else c for c in EVENTS.columns)

_write = Placeholders()
_WRITE = f"""
WITH moved_head AS ({_move_head(_write)}),
{projection_ctes(_write, when="EXISTS (SELECT FROM moved_head)")},
new_events AS (
    INSERT INTO events ({EVENTS.column_list()})
    SELECT {_EVENT_VALUES} FROM {_write.rows("r", _EVENT_ROWS, "events")}
    WHERE EXISTS (SELECT FROM moved_head)
),
new_subtrees AS ({insert_subtrees(_write, when="EXISTS (SELECT FROM moved_head)")})
SELECT pg_notify({_write.one("text", "channel")}, {_write.one("text", "payload")}) FROM moved_head
"""


def _basis(decided: Decided) -> dict[str, Any]:
    """The arguments of :func:`_basis_stands` for ``decided``."""
    basis = decided.basis
    return {
        "basis_seq": basis.seq,
        "basis_hash": basis.hash,
        "basis_epoch": basis.epoch,
        "refused_unseen": decided.refused_unseen,
    }


def _moved_head(sealed: Sealed) -> dict[str, Any]:
    """The arguments of :func:`_move_head`: from ``sealed``'s basis to the head it leaves."""
    return {"seq": sealed.after.seq, "hash": sealed.after.hash, **_basis(sealed.decided)}


async def write(conn: asyncpg.Connection, sealed: Sealed) -> Committed | Stale:
    """Record ``sealed`` (events, projections, the new head, NOTIFY) if the
    head of the log is still its basis and the transfers it creates are new.

    :class:`Statement` rows: one statement, outside a transaction a
    transaction of its own. :class:`Copy` rows: a transaction (or the one
    ``conn`` is in) that moves the head first, then COPYs the rows.
    :class:`Unchanged`: only the basis is checked. Committed once ``conn``'s
    transaction, if it is in one, commits.
    """
    try:
        return await _record(conn, sealed)
    except asyncpg.UniqueViolationError as error:
        # Under the lock (in the caller's transaction) everything was
        # looked up: a transfer recorded twice there is a fault to raise.
        if error.constraint_name != TRANSFERS_KEY or conn.is_in_transaction():
            raise
        # The statement (or the transaction) wrote nothing.
        return Stale(sealed)


#: The transfers' primary key, which refuses a transfer a batch took for new
#: when it was recorded already (see :func:`load`).
TRANSFERS_KEY = "transfers_pkey"


async def _record(conn: asyncpg.Connection, sealed: Sealed) -> Committed | Stale:
    match sealed.rows:
        case Unchanged():
            written = await conn.fetchval(_BASIS_STANDS, *_standing.arguments(_basis(sealed.decided))) is not None
        case Statement(projection=rows, events=events, subtrees=subtrees):
            arguments = {
                **rows.arguments(),
                **_moved_head(sealed),
                **subtree_arguments(subtrees),
                "events": events,
                "channel": NOTIFY_CHANNEL,
                "payload": str(sealed.after.seq),
            }
            written = await conn.execute(_WRITE, *_write.arguments(arguments)) == "SELECT 1"
        case Copy(projection=rows, events=events, transfers=transfers, entries=entries, subtrees=subtrees):
            async with _transaction(conn):
                written = await conn.fetchval(_MOVE_HEAD, *_move.arguments(_moved_head(sealed))) is not None
                if written:
                    await events.send(conn)
                    await write_subtrees(conn, subtrees)
                    await rows.copy(conn, text=(transfers, entries))
                    await conn.execute(_NOTIFY, NOTIFY_CHANNEL, str(sealed.after.seq))
    return Committed(sealed) if written else Stale(sealed)


@contextlib.asynccontextmanager
async def _transaction(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """The transaction ``conn`` is in (that of :func:`decide_under_lock`),
    else a new SERIALIZABLE one (:func:`~ledger.store.connection.transaction`)."""
    if conn.is_in_transaction():
        yield
    else:
        async with transaction(conn):
            yield


async def decide_under_lock(
    conn: asyncpg.Connection, pending: Pending, *, now: datetime, copy_from: int = COPY_FROM
) -> Committed:
    """Decide ``pending``'s requests in order against the log as ``conn``
    sees it, and record them.

    Must run in a SERIALIZABLE transaction on ``conn`` that holds the append
    lock (:data:`~ledger.store.head.LOCK`): its snapshot then sees every
    earlier append, and no other can move the head before it commits.
    """
    decided = Decided.at(*await read_tip(conn))

    await load(conn, pending.requests, decided.ledger)
    decided.decide(pending.requests, now=now)
    written = await write(conn, seal(decided, copy_from=copy_from))
    if isinstance(written, Stale):
        raise RuntimeError("a batch decided under the append lock went stale")
    return written


def _add_event_rows(
    rows: list[dict[str, Any]], leaves: list[bytes], records: list[RecordedEvent], previous_hash: bytes
) -> bytes:
    """Add the rows of ``records`` to ``rows`` and their Merkle leaf hashes to
    ``leaves``, each row hash-chained to the one before (the first to
    ``previous_hash``); return the last hash.

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
        canonical_bytes = event_bytes(
            seq=record.seq,
            type=event.type,
            stream_id=stream_id,
            data=data,
            metadata=metadata,
            recorded_at=record.recorded_at,
        )
        previous_hash = chained(previous_hash, canonical_bytes)
        leaves.append(leaf_hash(canonical_bytes))
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
