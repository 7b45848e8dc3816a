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

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

from ..domain import money
from ..domain.events import (
    AccountClosed,
    AccountCreated,
    PendingDecided,
    RecordedEvent,
    TransferPending,
    TransferPosted,
    TransferReversed,
)
from ..domain.ledger import Entry, Ledger
from ..domain.model import Transfer
from ..domain.money import ZERO
from .copying import CopyText, entry_line, transfer_line
from .rows import account_row
from .tables import ACCOUNTS, BALANCES, ENTRIES, TRANSFERS, Placeholders, with_totals_from


def projection_ctes(p: Placeholders, *, when: str = "true") -> str:
    """The CTEs that write the projections, each only if the SQL condition
    ``when`` holds (the append's: that it moved the head). Their parameters
    are named by ``p`` for the fields of :class:`Projection`
    (:meth:`Projection.arguments`).

    Rows go in as one ``jsonb`` array per table, which msgspec encodes in one
    call, where ``unnest`` arrays would have asyncpg type-check and encode
    every value in Python. Rows that are updated are also named as an array
    (``= ANY(ARRAY(…))``): the planner cannot count a ``jsonb`` array's rows,
    and would rather hash a scan of the whole table than look the keys up."""
    return f"""{_account_ctes(p, when)},
new_transfers AS (
    INSERT INTO transfers ({TRANSFERS.column_list()})
    SELECT * FROM {p.rows("r", TRANSFERS.record_columns(), "new_transfers")}
    WHERE {when}
),
{_changed_ctes(p, when)},
{_entry_rows(p)},
new_entries AS (
    INSERT INTO entries ({ENTRIES.column_list()})
    SELECT * FROM entry_rows WHERE {when}
),
{_moved_balances(when)}"""


def _entry_rows(p: Placeholders) -> str:
    """The CTE ``entry_rows``: the entries of the parameter ``entries``, a
    ``jsonb`` array of :class:`~ledger.domain.ledger.Entry` objects."""
    return f"""entry_rows AS (
    SELECT {with_totals_from(ENTRIES, "balance")}
    FROM {p.rows("e", ENTRIES.record_columns(Entry.__struct_fields__, balance="jsonb"), "entries")}
)"""


def _account_ctes(p: Placeholders, when: str) -> str:
    balance_row = ("account_id", "balance", "seq")
    return f"""
new_accounts AS (
    INSERT INTO accounts ({ACCOUNTS.column_list()})
    SELECT * FROM {p.rows("r", ACCOUNTS.record_columns(), "accounts")}
    WHERE {when}
),
new_balances AS (
    INSERT INTO balances ({BALANCES.column_list()})
    SELECT {with_totals_from(BALANCES, "balance")}
    FROM {p.rows("r", BALANCES.record_columns(balance_row, balance="jsonb"), "balances")}
    WHERE {when}
),
closed_accounts AS (
    UPDATE accounts SET closed = true WHERE id = ANY({p.array("uuid", "closed")}) AND {when}
)"""


#: What the run changes of a transfer made before it: its decision (when
#: decided in the run, else null and left as it is) and the amount reversed.
_CHANGED = ("id", "status", "posted_amount", "decided_seq")


def _changed_ctes(p: Placeholders, when: str) -> str:
    decided = ", ".join(f"{c} = coalesce(u.{c}, t.{c})" for c in _CHANGED[1:])
    return f"""
changed_rows AS (
    SELECT * FROM {p.rows("u", TRANSFERS.record_columns(_CHANGED) + ", reversed numeric", "changed_transfers")}
),
changed_transfers AS (
    UPDATE transfers AS t SET {decided}, reversed_amount = t.reversed_amount + u.reversed
    FROM changed_rows AS u
    WHERE t.id = u.id AND t.id = ANY(ARRAY(SELECT id FROM changed_rows)) AND {when}
)"""


def _moved_balances(when: str) -> str:
    """Each balance as the last of the ``entry_rows`` on it left it, for the
    accounts that have any. (In one statement with
    :func:`_account_ctes`, an account opened in the run is not updated: its
    row is inserted there, and is not visible here.)"""
    moved = BALANCES.columns[1:]  # the totals and seq
    return f"""
moved_balances AS (
    UPDATE balances AS b SET {", ".join(f"{c} = u.{c}" for c in moved)}
    FROM (
        SELECT DISTINCT ON (account_id) {BALANCES.column_list()}
        FROM entry_rows ORDER BY account_id, seq DESC
    ) AS u
    WHERE b.account_id = u.account_id AND b.account_id = ANY(ARRAY(SELECT account_id FROM entry_rows)) AND {when}
)"""


_before = Placeholders()
#: Before the COPY: what the copied rows refer to (accounts) and what they
#: do not hold (changes to transfers made before the run).
_BEFORE_COPY = f"WITH {_account_ctes(_before, 'true')}, {_changed_ctes(_before, 'true')} SELECT"
_set = Placeholders()
#: After it (or, in a rebuild, after the last COPY): the balances the copied
#: entries moved, each as the last entry on its account left it
#: (``entries``: that last entry of each).
_SET_BALANCES = f"WITH {_entry_rows(_set)}, {_moved_balances('true')} SELECT"


class Projection(NamedTuple):
    """What a run of applied events changed, as the rows of each projection."""

    accounts: list[dict[str, Any]]
    #: The balances of the accounts opened in the run, as the run left them.
    balances: list[dict[str, Any]]
    #: Accounts closed in the run that existed before it.
    closed: list[UUID]
    new_transfers: list[Transfer]
    #: Changes to transfers that existed before the run: decided, reversed (see :func:`_changed_row`).
    changed_transfers: list[dict[str, Any]]
    entries: list[Entry]

    def arguments(self) -> dict[str, Any]:
        """The parameters of :func:`projection_ctes` by name, rows as they are
        (the ``Transfer`` and ``Entry`` structs' fields are the columns, an
        entry's balance nested)."""
        return self._asdict()

    def copy_text(self) -> tuple[CopyText[Transfer], CopyText[Entry]]:
        """The new transfers and the entries as :meth:`copy` sends them."""
        return (
            CopyText(TRANSFERS, transfer_line, self.new_transfers),
            CopyText(ENTRIES, entry_line, self.entries),
        )

    async def copy(
        self,
        conn: asyncpg.Connection,
        *,
        text: tuple[CopyText[Transfer], CopyText[Entry]] | None = None,
    ) -> None:
        """Write the projections in ``conn``'s transaction, the new transfers
        and entries by COPY (as ``text``, if given: :meth:`copy_text`, made
        ahead), in three steps: what those rows refer to, the rows
        (:meth:`copy_rows`), and the balances they moved (:func:`set_balances`)."""
        await self.copy_rows(conn, text=text)
        # Accounts opened in the run were inserted with their balances.
        opened = {a["id"] for a in self.accounts}
        await set_balances(conn, [e for e in self.entries if e.account_id not in opened])

    async def copy_rows(
        self,
        conn: asyncpg.Connection,
        *,
        text: tuple[CopyText[Transfer], CopyText[Entry]] | None = None,
    ) -> None:
        """:meth:`copy` but for its last step: the balances the entries moved
        are left as they were, for the caller to set."""
        arguments = self.arguments()
        await conn.execute(_BEFORE_COPY, *_before.arguments({n: arguments[n] for n in _before.names}))
        for rows in text or self.copy_text():
            await rows.send(conn)


async def set_balances(conn: asyncpg.Connection, entries: Iterable[Entry]) -> None:
    """Set each balance the ``entries`` (in seq order) moved as the last of
    them on its account left it."""
    last = {e.account_id: e for e in entries}
    await conn.execute(_SET_BALANCES, *_set.arguments({"entries": list(last.values())}))


def projection(ledger: Ledger, applied: Sequence[tuple[RecordedEvent, tuple[Entry, ...]]]) -> Projection:
    """What ``applied`` events (with the entries ``Ledger.apply`` gave for
    them) changed, as ``ledger`` now holds it."""
    new_accounts: dict[UUID, int] = {}  # id: seq of its creation
    closed_accounts: set[UUID] = set()
    new_transfers: set[UUID] = set()
    decided_transfers: set[UUID] = set()
    reversed_by: dict[UUID, Decimal] = {}  # original: what the run reversed of it
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
            case TransferReversed():
                new_transfers.add(event.transfer_id)
                reversed_by[event.reverses] = money.add(reversed_by.get(event.reverses, ZERO), event.amount)
            case PendingDecided():
                decided_transfers.add(event.transfer_id)
        entries.extend(event_entries)

    # An account opened in the run is stored with the balance the run left it.
    last_entry = {e.account_id: e.seq for e in entries} if new_accounts else {}
    accounts, balances = [], []
    for account_id, seq in new_accounts.items():
        a = ledger.accounts[account_id]
        accounts.append(account_row(a, seq=seq))
        # A copy: batches decided after this one move the ledger's balances
        # on, maybe before these parameters are sent.
        balances.append({"account_id": account_id, "balance": a.balance.copy(), "seq": last_entry.get(account_id, seq)})
    return Projection(
        accounts,
        balances,
        list(closed_accounts - new_accounts.keys()),
        [ledger.transfers[i] for i in new_transfers],
        [
            _changed_row(ledger.transfers[i] if i in decided_transfers else None, i, reversed_by.get(i, ZERO))
            for i in (decided_transfers | reversed_by.keys()) - new_transfers
        ],
        entries,
    )


def _changed_row(decided: Transfer | None, transfer_id: UUID, reversed_: Decimal) -> dict[str, Any]:
    """The change to a transfer made before the run: its decision, if the
    run ``decided`` it, and the amount the run reversed of it, added to what
    it had (the transfer itself may be no longer held: a long fold forgets
    settled transfers)."""
    return {
        "id": transfer_id,
        "status": None if decided is None else decided.status,
        "posted_amount": None if decided is None else decided.posted_amount,
        "decided_seq": None if decided is None else decided.decided_seq,
        "reversed": reversed_,
    }
