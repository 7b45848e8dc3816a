"""The append: decide a batch of commands and record it, in one transaction.

Run inside a SERIALIZABLE transaction (see :mod:`ledger.store.writer`):

1. lock the head table, before any read, so the snapshot sees every earlier
   append and appends are serial: seq is gapless and commit-ordered;
2. load what the batch touches with one query per table (``= ANY($1)``);
3. decide every command in order with the domain's :class:`Ledger`;
4. write events (hash-chained) and projections with one ``unnest`` statement
   per table, move the head, and NOTIFY the new head.

Everything here may run again from the start after a conflict, so it only
reads and writes inside the transaction it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ..domain.chain import event_hash
from ..domain.commands import Command, account_ids, transfer_ids
from ..domain.events import AccountClosed, AccountCreated, PendingDecided, TransferPending, TransferPosted
from ..domain.ledger import Entry, Ledger, Outcome, Recorded
from .rows import ACCOUNT_SELECT, TRANSFER_SELECT, account_from_row, transfer_from_row

#: The channel that carries the new head seq after each append.
NOTIFY_CHANNEL = "ledger_events"

_LOCK = "LOCK TABLE ledger_head IN EXCLUSIVE MODE"
_HEAD = "SELECT seq, hash FROM ledger_head"
_LOAD_ACCOUNTS = ACCOUNT_SELECT + " WHERE a.id = ANY($1::uuid[])"
_LOAD_TRANSFERS = TRANSFER_SELECT + " WHERE id = ANY($1::uuid[])"

_INSERT_EVENTS = """
    INSERT INTO events (seq, type, stream_id, data, metadata, recorded_at, hash)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::jsonb[], $5::jsonb[],
                         $6::timestamptz[], $7::bytea[])
"""
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
_UPDATE_HEAD = "UPDATE ledger_head SET seq = $1, hash = $2"
_NOTIFY = "SELECT pg_notify($1, $2)"


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """The commands of one caller: decided in order, all-or-nothing if ``atomic``."""

    commands: Sequence[Command]
    atomic: bool = False
    #: Stored with each event it causes: who asked (request id, token name).
    metadata: dict[str, Any] = field(default_factory=dict)


async def append(
    conn: asyncpg.Connection, requests: Sequence[AppendRequest], *, now: datetime
) -> list[list[Outcome]]:
    """Decide and record ``requests`` in order; one list of outcomes for each.

    Must run in a SERIALIZABLE transaction on ``conn``.
    """
    await conn.execute(_LOCK)
    head = await conn.fetchrow(_HEAD)
    commands = [c for r in requests for c in r.commands]
    transfers = [
        transfer_from_row(row)
        for row in await conn.fetch(_LOAD_TRANSFERS, list({i for c in commands for i in transfer_ids(c)}))
    ]
    # A decision on a transfer moves that transfer's accounts.
    wanted = {i for c in commands for i in account_ids(c)}
    wanted.update(i for t in transfers for i in (t.debit_account_id, t.credit_account_id))
    accounts = await conn.fetch(_LOAD_ACCOUNTS, list(wanted))

    ledger = Ledger(map(account_from_row, accounts), transfers, head=head["seq"])
    results = [
        ledger.execute_all(r.commands, now=now, metadata=r.metadata, atomic=r.atomic)
        for r in requests
    ]
    recorded = [o for outcomes in results for o in outcomes if isinstance(o, Recorded)]
    if recorded:
        last_hash = await _write(conn, ledger, recorded, head["hash"])
        await conn.execute(_UPDATE_HEAD, ledger.head, last_hash)
        await conn.execute(_NOTIFY, NOTIFY_CHANNEL, str(ledger.head))
    return results


async def _write(
    conn: asyncpg.Connection, ledger: Ledger, recorded: list[Recorded], previous_hash: bytes
) -> bytes:
    """Write the events and their projections; return the last event's hash."""
    events: list[tuple] = []
    new_accounts: dict[UUID, int] = {}  # id: seq of its creation
    closed_accounts: set[UUID] = set()
    new_transfers: set[UUID] = set()
    decided_transfers: set[UUID] = set()
    entries: list[Entry] = []
    for outcome in recorded:
        record = outcome.record
        event = record.event
        data = event.to_data()
        previous_hash = event_hash(
            previous_hash,
            seq=record.seq,
            type=event.type,
            stream_id=event.stream_id,
            data=data,
            metadata=record.metadata,
            recorded_at=record.recorded_at,
        )
        events.append(
            (record.seq, event.type, event.stream_id, data, record.metadata, record.recorded_at, previous_hash)
        )
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
        entries.extend(outcome.entries)

    await conn.execute(_INSERT_EVENTS, *_columns(events, 7))
    if new_accounts:
        rows = [(ledger.accounts[i], seq) for i, seq in new_accounts.items()]
        await conn.execute(
            _INSERT_ACCOUNTS,
            *_columns(
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
            *_columns(
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
            *_columns([(t.id, t.status, t.posted_amount, t.decided_seq) for t in transfers], 4),
        )
    if entries:
        await conn.execute(
            _INSERT_ENTRIES,
            *_columns(
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
        await conn.execute(_UPDATE_BALANCES, *_columns(_final_balances(ledger, entries), 6))
    return previous_hash


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


def _columns(rows: list[tuple], width: int) -> list[list[Any]]:
    """Rows turned into one list per column, for ``unnest`` parameters."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
