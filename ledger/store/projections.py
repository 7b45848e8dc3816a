"""The projections of the log: accounts, balances, transfers and entries.

:func:`projection_ctes` writes what a run of applied events changed as
data-modifying CTEs, one ``unnest`` per table, over the parameters
:func:`projection_parameters` gives. The
append puts them in its one write statement, next to the events; the rebuild
runs them alone (:func:`write_projections`) for the whole log, a chunk at a
time, so a projection is always written by the same code whichever way it
comes.

The CTEs of one statement share a snapshot and cannot see each other's rows,
so no row is written twice: an account opened in the run is inserted with the
balance the run left it, a transfer made in the run with the state the run
left it in; only rows that existed before are updated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from ..domain.events import AccountClosed, AccountCreated, PendingDecided, RecordedEvent, TransferPending, TransferPosted
from ..domain.ledger import Entry, Ledger


class Placeholders:
    """Numbers a statement's parameters in the order they are made, each cast
    to its type."""

    def __init__(self) -> None:
        self.count = 0

    def unnest(self, *types: str) -> str:
        #: The number of the last ``unnest``'s first array, to name it again.
        self.unnested = self.count + 1
        return f"unnest({', '.join(self.array(t) for t in types)})"

    def array(self, type_: str) -> str:
        return self.one(f"{type_}[]")

    def one(self, type_: str) -> str:
        self.count += 1
        return f"${self.count}::{type_}"


_BALANCE_TYPES = ("numeric", "numeric", "numeric", "numeric", "bigint")


def projection_ctes(p: Placeholders, *, when: str = "true") -> str:
    """The CTEs that write the projections, each only if the SQL condition
    ``when`` holds (the append's: that it moved the head). Their parameters
    are numbered by ``p``, in the order :func:`projection_parameters` gives."""
    return f"""
new_accounts AS (
    INSERT INTO accounts (id, currency, scale, debits_must_not_exceed_credits,
                          credits_must_not_exceed_debits, metadata, closed, seq, created_at)
    SELECT * FROM {p.unnest("uuid", "text", "smallint", "boolean", "boolean", "jsonb", "boolean", "bigint", "timestamptz")}
    WHERE {when}
),
new_balances AS (
    INSERT INTO balances (account_id, debits_posted, credits_posted, debits_pending,
                          credits_pending, seq)
    SELECT * FROM {p.unnest("uuid", *_BALANCE_TYPES)}
    WHERE {when}
),
closed_accounts AS (
    UPDATE accounts SET closed = true WHERE id = ANY({p.array("uuid")}) AND {when}
),
new_transfers AS (
    INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, code,
                           metadata, pending, timeout_seconds, status, seq, created_at,
                           expires_at, posted_amount, decided_seq)
    SELECT * FROM {p.unnest("uuid", "uuid", "uuid", "numeric", "text", "text", "jsonb", "boolean",
                            "integer", "text", "bigint", "timestamptz", "timestamptz", "numeric", "bigint")}
    WHERE {when}
),
decided_transfers AS (
    UPDATE transfers AS t
    SET status = u.status, posted_amount = u.posted_amount, decided_seq = u.decided_seq
    FROM {p.unnest("uuid", "text", "numeric", "bigint")} AS u(id, status, posted_amount, decided_seq)
    WHERE t.id = u.id AND {when}
),
new_entries AS (
    INSERT INTO entries (account_id, seq, transfer_id, type, side, amount, debits_posted,
                         credits_posted, debits_pending, credits_pending, recorded_at)
    SELECT * FROM {p.unnest("uuid", "bigint", "uuid", "text", "text", "numeric", "numeric", "numeric",
                            "numeric", "numeric", "timestamptz")}
    WHERE {when}
),
moved_balances AS (
    UPDATE balances AS b
    SET debits_posted = u.debits_posted, credits_posted = u.credits_posted,
        debits_pending = u.debits_pending, credits_pending = u.credits_pending, seq = u.seq
    FROM {p.unnest("uuid", *_BALANCE_TYPES)}
        AS u(account_id, debits_posted, credits_posted, debits_pending, credits_pending, seq)
    -- The accounts named again as an array: the planner then reaches their
    -- rows by the primary key, instead of hashing a scan of every balance.
    WHERE b.account_id = u.account_id AND b.account_id = ANY(${p.unnested}::uuid[]) AND {when}
)"""


_WRITE = f"WITH {projection_ctes(Placeholders())} SELECT"


async def write_projections(
    conn: asyncpg.Connection, ledger: Ledger, applied: Sequence[tuple[RecordedEvent, tuple[Entry, ...]]]
) -> None:
    """Write what ``applied`` events changed, as one statement."""
    await conn.execute(_WRITE, *projection_parameters(ledger, applied))


def projection_parameters(
    ledger: Ledger, applied: Sequence[tuple[RecordedEvent, tuple[Entry, ...]]]
) -> list[list[Any]]:
    """The parameters of :data:`PROJECTION_CTES` for ``applied`` events (with
    the entries ``Ledger.apply`` gave for them), as ``ledger`` now holds them."""
    new_accounts: dict[UUID, int] = {}  # id: seq of its creation
    closed_accounts: set[UUID] = set()
    new_transfers: set[UUID] = set()
    decided_transfers: set[UUID] = set()
    entries: list[Entry] = []
    for record, event_entries in applied:
        event = record.event
        match event:
            case AccountCreated():
                new_accounts[event.account_id] = record.seq
            case AccountClosed():
                closed_accounts.add(event.account_id)
            case TransferPosted() | TransferPending():
                new_transfers.add(event.transfer_id)
            case PendingDecided():
                decided_transfers.add(event.transfer_id)
        entries.extend(event_entries)

    # The seq of the last event that changed each balance.
    balance_seq = dict(new_accounts)
    for e in entries:
        balance_seq[e.account_id] = e.seq
    new_balances, moved_balances = [], []
    for account_id, seq in balance_seq.items():
        b = ledger.accounts[account_id].balance
        row = (account_id, b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending, seq)
        (new_balances if account_id in new_accounts else moved_balances).append(row)

    accounts = [(ledger.accounts[i], seq) for i, seq in new_accounts.items()]
    transfers = [ledger.transfers[i] for i in new_transfers]
    decided = [ledger.transfers[i] for i in decided_transfers - new_transfers]
    return [
        *columns(
            [
                (
                    a.id, a.currency, a.scale, a.flags.debits_must_not_exceed_credits,
                    a.flags.credits_must_not_exceed_debits, a.metadata, a.closed, seq, a.created_at,
                )
                for a, seq in accounts
            ],
            9,
        ),
        *columns(new_balances, 6),
        list(closed_accounts - new_accounts.keys()),
        *columns(
            [
                (
                    t.id, t.debit_account_id, t.credit_account_id, t.amount, t.currency, t.code,
                    t.metadata, t.pending, t.timeout_seconds, t.status, t.seq, t.created_at,
                    t.expires_at, t.posted_amount, t.decided_seq,
                )
                for t in transfers
            ],
            15,
        ),
        *columns([(t.id, t.status, t.posted_amount, t.decided_seq) for t in decided], 4),
        *columns(
            [
                (
                    e.account_id, e.seq, e.transfer_id, e.type, e.side, e.amount,
                    e.balance.debits_posted, e.balance.credits_posted,
                    e.balance.debits_pending, e.balance.credits_pending, e.recorded_at,
                )
                for e in entries
            ],
            11,
        ),
        *columns(moved_balances, 6),
    ]


def columns(rows: list[tuple], width: int) -> list[list[Any]]:
    """Rows turned into one list per column, for ``unnest`` parameters."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
