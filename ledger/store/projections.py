"""The projections of the log: accounts, balances, transfers and entries.

:func:`projection` gathers what a run of applied events changed, as the
rows of each projection (a :class:`Projection`), and :func:`projection_ctes`
writes them as data-modifying CTEs, one ``jsonb`` array of rows per table.
The append puts those CTEs in its one write statement, next to the events.

The CTEs of one statement share a snapshot and cannot see each other's rows,
so no row is written twice: an account opened in the run is inserted with the
balance the run left it, a transfer made in the run with the state the run
left it in; only rows that existed before are updated.

Large appends, and the rebuild (the whole log, a chunk at a time), send the
new transfers and entries by COPY instead (:meth:`Projection.copy`, with
:mod:`ledger.store.copying`), around the same CTEs for accounts and decided
transfers and the balances moved, so a projection is always written by the
same code whichever way it comes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

from ..domain.events import (
    AccountClosed,
    AccountCreated,
    PendingDecided,
    RecordedEvent,
    TransferPending,
    TransferPosted,
)
from ..domain.ledger import Entry, Ledger
from ..domain.model import Balance, Transfer
from .copying import ENTRY_COLUMNS, TRANSFER_COLUMNS, CopyText, entry_line, transfer_line


class Placeholders:
    """Numbers a statement's parameters in the order they are made, each cast
    to its type."""

    def __init__(self) -> None:
        self.count = 0

    def rows(self, alias: str, columns: str) -> str:
        """A set of rows from one ``jsonb`` parameter: an array of objects
        keyed by ``columns`` (``"name type, …"``); other keys are ignored."""
        return f"jsonb_to_recordset({self.one('jsonb')}) AS {alias}({columns})"

    def array(self, type_: str) -> str:
        return self.one(f"{type_}[]")

    def one(self, type_: str) -> str:
        self.count += 1
        return f"${self.count}::{type_}"


#: The four totals of a row's nested ``balance`` object (a :class:`Balance`
#: as msgspec encodes it), as columns of their own.
_BALANCE = ", ".join(f"(balance->>'{name}')::numeric AS {name}" for name in Balance.__struct_fields__)


def projection_ctes(p: Placeholders, *, when: str = "true") -> str:
    """The CTEs that write the projections, each only if the SQL condition
    ``when`` holds (the append's: that it moved the head). Their parameters
    are numbered by ``p``, in the order :meth:`Projection.parameters` gives.

    Rows go in as one ``jsonb`` array per table, which msgspec encodes in one
    call: as ``unnest`` arrays, asyncpg type-checked and encoded every value
    in Python, the largest part of the service's CPU per transfer.

    Rows that are updated are also named as an array (``= ANY(ARRAY(…))``):
    the planner cannot count a ``jsonb`` array's rows, and would rather hash a
    scan of the whole table than look the keys up."""
    return f"""{_account_ctes(p, when)},
new_transfers AS (
    INSERT INTO transfers ({", ".join(TRANSFER_COLUMNS)})
    SELECT * FROM {
        p.rows(
            "r",
            "id uuid, debit_account_id uuid, credit_account_id uuid, amount numeric, "
            "currency text, code text, metadata jsonb, pending boolean, timeout_seconds integer, "
            "status text, seq bigint, created_at timestamptz, expires_at timestamptz, "
            "posted_amount numeric, decided_seq bigint",
        )
    }
    WHERE {when}
),
{_decided_ctes(p, when)},
entry_rows AS (
    SELECT account_id, seq, transfer_id, type, side, amount, {_BALANCE}, recorded_at
    FROM {
        p.rows(
            "e",
            "account_id uuid, seq bigint, transfer_id uuid, type text, side text, amount numeric, "
            "balance jsonb, recorded_at timestamptz",
        )
    }
),
new_entries AS (
    INSERT INTO entries ({", ".join(ENTRY_COLUMNS)})
    SELECT * FROM entry_rows WHERE {when}
),
{_moved_balances(when)}"""


def _account_ctes(p: Placeholders, when: str) -> str:
    return f"""
new_accounts AS (
    INSERT INTO accounts (id, currency, scale, debits_must_not_exceed_credits,
                          credits_must_not_exceed_debits, metadata, closed, seq, created_at)
    SELECT * FROM {
        p.rows(
            "r",
            "id uuid, currency text, scale smallint, debits_must_not_exceed_credits boolean, "
            "credits_must_not_exceed_debits boolean, metadata jsonb, closed boolean, seq bigint, "
            "created_at timestamptz",
        )
    }
    WHERE {when}
),
new_balances AS (
    INSERT INTO balances (account_id, debits_posted, credits_posted, debits_pending,
                          credits_pending, seq)
    SELECT account_id, {_BALANCE}, seq FROM {p.rows("r", "account_id uuid, balance jsonb, seq bigint")}
    WHERE {when}
),
closed_accounts AS (
    UPDATE accounts SET closed = true WHERE id = ANY({p.array("uuid")}) AND {when}
)"""


def _decided_ctes(p: Placeholders, when: str) -> str:
    return f"""
decided_rows AS (
    SELECT * FROM {p.rows("u", "id uuid, status text, posted_amount numeric, decided_seq bigint")}
),
decided_transfers AS (
    UPDATE transfers AS t
    SET status = u.status, posted_amount = u.posted_amount, decided_seq = u.decided_seq
    FROM decided_rows AS u
    WHERE t.id = u.id AND t.id = ANY(ARRAY(SELECT id FROM decided_rows)) AND {when}
)"""


def _moved_balances(when: str, accounts: str = "ARRAY(SELECT account_id FROM entry_rows)") -> str:
    """Each balance as the last of the ``entry_rows`` on it left it, for the
    ``accounts`` (an array) that have any. (In one statement with
    :func:`_account_ctes`, an account opened in the run is not updated: its
    row is inserted there, and is not visible here.)"""
    return f"""
moved_balances AS (
    UPDATE balances AS b
    SET debits_posted = u.debits_posted, credits_posted = u.credits_posted,
        debits_pending = u.debits_pending, credits_pending = u.credits_pending, seq = u.seq
    FROM (
        SELECT DISTINCT ON (account_id) account_id, debits_posted, credits_posted, debits_pending,
                                        credits_pending, seq
        FROM entry_rows ORDER BY account_id, seq DESC
    ) AS u
    WHERE b.account_id = u.account_id AND b.account_id = ANY({accounts}) AND {when}
)"""


_p = Placeholders()
#: Before the COPY: what the copied rows refer to (accounts) and what they
#: do not hold (decisions on transfers made before the run).
_BEFORE_COPY = f"WITH {_account_ctes(_p, 'true')}, {_decided_ctes(_p, 'true')} SELECT"
#: After it: the balances, from the entries copied, read back by account
#: past the seq the run follows.
_AFTER_COPY = f"""WITH
entry_rows AS (
    SELECT {", ".join(ENTRY_COLUMNS)} FROM entries
    WHERE account_id = ANY($1::uuid[]) AND seq > $2::bigint
),
{_moved_balances("true", "$1::uuid[]")} SELECT"""
del _p


class Projection(NamedTuple):
    """What a run of applied events changed, as the rows of each projection."""

    accounts: list[dict[str, Any]]
    #: The balances of the accounts opened in the run, as the run left them.
    balances: list[dict[str, Any]]
    #: Accounts closed in the run that existed before it.
    closed: list[UUID]
    new_transfers: list[Transfer]
    #: Transfers decided in the run that existed before it.
    decided_transfers: list[Transfer]
    entries: list[Entry]

    def parameters(self) -> list[Any]:
        """The parameters of :func:`projection_ctes`, rows as they are (the
        ``Transfer`` and ``Entry`` structs' fields are the columns, an
        entry's balance nested)."""
        return list(self)

    def copy_text(self) -> tuple[CopyText[Transfer], CopyText[Entry]]:
        """The new transfers and the entries as :meth:`copy` sends them."""
        return (
            CopyText("transfers", TRANSFER_COLUMNS, transfer_line, self.new_transfers),
            CopyText("entries", ENTRY_COLUMNS, entry_line, self.entries),
        )

    async def copy(
        self,
        conn: asyncpg.Connection,
        *,
        after: int,
        text: tuple[CopyText[Transfer], CopyText[Entry]] | None = None,
    ) -> None:
        """Write the projections in ``conn``'s transaction, the new transfers
        and entries by COPY (as ``text``, if given: :meth:`copy_text`, made
        ahead), in three steps: what those rows refer to, the rows, and the
        balances they moved. Every event of the run has a seq greater than
        ``after``."""
        await conn.execute(_BEFORE_COPY, self.accounts, self.balances, self.closed, self.decided_transfers)
        for rows in text or self.copy_text():
            await rows.send(conn)
        # Accounts opened in the run were inserted with their balances.
        moved = {e.account_id for e in self.entries}.difference(a["id"] for a in self.accounts)
        await conn.execute(_AFTER_COPY, list(moved), after)


def projection(ledger: Ledger, applied: Sequence[tuple[RecordedEvent, tuple[Entry, ...]]]) -> Projection:
    """What ``applied`` events (with the entries ``Ledger.apply`` gave for
    them) changed, as ``ledger`` now holds it."""
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

    # An account opened in the run is stored with the balance the run left it.
    last_entry = {e.account_id: e.seq for e in entries} if new_accounts else {}
    accounts, balances = [], []
    for account_id, seq in new_accounts.items():
        a = ledger.accounts[account_id]
        accounts.append(
            {
                "id": a.id,
                "currency": a.currency,
                "scale": a.scale,
                "debits_must_not_exceed_credits": a.flags.debits_must_not_exceed_credits,
                "credits_must_not_exceed_debits": a.flags.credits_must_not_exceed_debits,
                "metadata": a.metadata,
                "closed": a.closed,
                "seq": seq,
                "created_at": a.created_at,
            }
        )
        # A copy: batches decided after this one move the ledger's balances
        # on, maybe before these parameters are sent.
        balances.append({"account_id": account_id, "balance": a.balance.copy(), "seq": last_entry.get(account_id, seq)})
    return Projection(
        accounts,
        balances,
        list(closed_accounts - new_accounts.keys()),
        [ledger.transfers[i] for i in new_transfers],
        [ledger.transfers[i] for i in decided_transfers - new_transfers],
        entries,
    )
