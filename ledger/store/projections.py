"""The projections of the log: accounts, balances, transfers and entries.

:func:`write_projections` writes what a run of applied events changed, with one
``unnest`` statement per table. Appends call it for what they record; the
rebuild calls it for the whole log, a chunk at a time, so a projection is
always written by the same code whichever way it comes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from ..domain.events import AccountClosed, AccountCreated, PendingDecided, RecordedEvent, TransferPending, TransferPosted
from ..domain.ledger import Entry, Ledger

_INSERT_ACCOUNTS = """
    INSERT INTO accounts (id, currency, scale, debits_must_not_exceed_credits,
                          credits_must_not_exceed_debits, metadata, closed, seq, created_at)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::boolean[],
                         $5::boolean[], $6::jsonb[], $7::boolean[], $8::bigint[],
                         $9::timestamptz[])
"""
_CLOSE_ACCOUNTS = "UPDATE accounts SET closed = true WHERE id = ANY($1::uuid[])"
_INSERT_BALANCES = """
    INSERT INTO balances (account_id, seq) SELECT * FROM unnest($1::uuid[], $2::bigint[])
"""
_INSERT_TRANSFERS = """
    INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, code,
                           metadata, pending, timeout_seconds, status, seq, created_at,
                           expires_at, posted_amount, decided_seq)
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::numeric[], $5::text[],
                         $6::text[], $7::jsonb[], $8::boolean[], $9::integer[], $10::text[],
                         $11::bigint[], $12::timestamptz[], $13::timestamptz[],
                         $14::numeric[], $15::bigint[])
"""
_DECIDE_TRANSFERS = """
    UPDATE transfers AS t
    SET status = u.status, posted_amount = u.posted_amount, decided_seq = u.decided_seq
    FROM unnest($1::uuid[], $2::text[], $3::numeric[], $4::bigint[])
        AS u(id, status, posted_amount, decided_seq)
    WHERE t.id = u.id
"""
_INSERT_ENTRIES = """
    INSERT INTO entries (account_id, seq, transfer_id, type, side, amount, debits_posted,
                         credits_posted, debits_pending, credits_pending, recorded_at)
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::text[],
                         $6::numeric[], $7::numeric[], $8::numeric[], $9::numeric[],
                         $10::numeric[], $11::timestamptz[])
"""
_UPDATE_BALANCES = """
    UPDATE balances AS b
    SET debits_posted = u.debits_posted, credits_posted = u.credits_posted,
        debits_pending = u.debits_pending, credits_pending = u.credits_pending, seq = u.seq
    FROM unnest($1::uuid[], $2::numeric[], $3::numeric[], $4::numeric[], $5::numeric[],
                $6::bigint[])
        AS u(account_id, debits_posted, credits_posted, debits_pending, credits_pending, seq)
    WHERE b.account_id = u.account_id
"""

async def write_projections(
    conn: asyncpg.Connection, ledger: Ledger, applied: Sequence[tuple[RecordedEvent, tuple[Entry, ...]]]
) -> None:
    """Write what ``applied`` events (with the entries ``Ledger.apply`` gave for
    them) changed, as ``ledger`` now holds it: new accounts, balances, new and
    decided transfers, entries."""
    new_accounts: dict[UUID, int] = {}  # id: seq of its creation
    closed_accounts: set[UUID] = set()
    new_transfers: set[UUID] = set()
    decided_transfers: set[UUID] = set()
    entries: list[Entry] = []
    for record, event_entries in applied:
        event = record.event
        # Projections are written as the batch left them (an account opened and
        # closed, or a transfer made and posted, in one batch is one insert).
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

    if new_accounts:
        rows = [(ledger.accounts[i], seq) for i, seq in new_accounts.items()]
        await conn.execute(
            _INSERT_ACCOUNTS,
            *columns(
                [
                    (
                        a.id, a.currency, a.scale, a.flags.debits_must_not_exceed_credits,
                        a.flags.credits_must_not_exceed_debits, a.metadata, a.closed, seq,
                        a.created_at,
                    )
                    for a, seq in rows
                ],
                9,
            ),
        )
        await conn.execute(_INSERT_BALANCES, list(new_accounts), list(new_accounts.values()))
    if closed_accounts - new_accounts.keys():
        await conn.execute(_CLOSE_ACCOUNTS, list(closed_accounts - new_accounts.keys()))
    if new_transfers:
        transfers = [ledger.transfers[i] for i in new_transfers]
        await conn.execute(
            _INSERT_TRANSFERS,
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
        )
    if decided_transfers - new_transfers:
        transfers = [ledger.transfers[i] for i in decided_transfers - new_transfers]
        await conn.execute(
            _DECIDE_TRANSFERS,
            *columns([(t.id, t.status, t.posted_amount, t.decided_seq) for t in transfers], 4),
        )
    if entries:
        await conn.execute(
            _INSERT_ENTRIES,
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
        )
        await conn.execute(_UPDATE_BALANCES, *columns(_final_balances(ledger, entries), 6))


def _final_balances(ledger: Ledger, entries: list[Entry]) -> list[tuple]:
    """Each touched account's balance after the batch, with the last seq that moved it."""
    last_seq: dict[UUID, int] = {}
    for e in entries:
        last_seq[e.account_id] = e.seq
    rows = []
    for account_id, seq in last_seq.items():
        b = ledger.accounts[account_id].balance
        rows.append((account_id, b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending, seq))
    return rows


def columns(rows: list[tuple], width: int) -> list[list[Any]]:
    """Rows turned into one list per column, for ``unnest`` parameters."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
