"""What the log's events add up to, summed by PostgreSQL: the replay that
reconciliation compares with the stored projections.

One set-based statement reads every event that moves money, makes each side
of it a movement of its account, and sums the movements per account by the
rules the event classes state (``holds``, ``releases``, ``posts`` in
:mod:`ledger.domain.events`), the rules :meth:`~ledger.domain.ledger.Ledger.apply`
folds by: the statement is built from them, so the two cannot disagree on
what an event does. It reads the events alone, never a projection, in the
caller's snapshot. Memory grows with the accounts (one row each), not with
the events, and PostgreSQL may spread the scan over parallel workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

import asyncpg

from ..domain.events import EVENT_TYPES, AccountCreated, TransferReversed
from ..domain.model import Balance
from .connection import Conn
from .tables import BALANCE_TOTALS

_MOVING = [t for t, c in EVENT_TYPES.items() if c.holds or c.releases or c.posts]
_HOLDS = [t for t, c in EVENT_TYPES.items() if c.holds]
_RELEASES = [t for t, c in EVENT_TYPES.items() if c.releases]
_POSTS = [t for t, c in EVENT_TYPES.items() if c.posts]

# $1 moving types, $2 those that hold, $3 release, $4 post; $5 account_created;
# $6 the head (events past it are not part of the log the chain proves).
# A release takes off pending what the transfer's holding event held (the
# earlier event of its stream that holds); one with none is "unheld". Each
# movement comes out twice, as the debit side of its debit account and the
# credit side of its credit account. An account is "unopened" at the first
# movement of it that no account_created before it opened.
_SUMS = f"""
    WITH opened AS (
        SELECT (data->>'account_id')::uuid AS account_id, min(seq) AS seq, min(data->>'currency') AS currency
        FROM events WHERE type = $5 AND seq <= $6 GROUP BY 1
    ), movements AS (
        SELECT e.seq,
               e.data->>'debit_account_id' AS debit_account_id,
               e.data->>'credit_account_id' AS credit_account_id,
               CASE WHEN e.type = ANY($4::text[]) THEN (e.data->>'amount')::numeric ELSE 0 END AS posted,
               CASE WHEN e.type = ANY($2::text[]) THEN (e.data->>'amount')::numeric ELSE 0 END
                 - CASE WHEN e.type = ANY($3::text[]) THEN coalesce((h.data->>'amount')::numeric, 0) ELSE 0 END
                 AS pending,
               e.type = ANY($3::text[]) AND h.seq IS NULL AS unheld
        FROM events e
        LEFT JOIN events h
          ON e.type = ANY($3::text[]) AND h.stream_id = e.stream_id AND h.type = ANY($2::text[]) AND h.seq < e.seq
        WHERE e.type = ANY($1::text[]) AND e.seq <= $6
    ), moved AS (
        SELECT side.account_id,
               coalesce(sum(m.posted) FILTER (WHERE side.debit), 0) AS debits_posted,
               coalesce(sum(m.posted) FILTER (WHERE NOT side.debit), 0) AS credits_posted,
               coalesce(sum(m.pending) FILTER (WHERE side.debit), 0) AS debits_pending,
               coalesce(sum(m.pending) FILTER (WHERE NOT side.debit), 0) AS credits_pending,
               min(m.seq) AS first_seq,
               min(m.seq) FILTER (WHERE m.unheld) AS unheld_seq
        FROM movements m
        CROSS JOIN LATERAL (VALUES (m.debit_account_id::uuid, true), (m.credit_account_id::uuid, false))
            AS side(account_id, debit)
        GROUP BY side.account_id
    )
    SELECT coalesce(o.account_id, m.account_id) AS account_id, o.currency,
           {", ".join(f"coalesce(m.{c}, 0) AS {c}" for c in BALANCE_TOTALS)},
           CASE WHEN o.seq IS NULL OR o.seq > m.first_seq THEN m.first_seq END AS unopened_seq,
           m.unheld_seq
    FROM opened o FULL JOIN moved m ON m.account_id = o.account_id
"""
#: Per transfer reversed, the sum of its reversals: $1 is the reversal's type, $2 the head.
_REVERSALS = """
    SELECT (data->>'reverses')::uuid AS transfer_id, sum((data->>'amount')::numeric) AS amount
    FROM events WHERE type = $1 AND seq <= $2 GROUP BY 1
"""


@dataclass(frozen=True, slots=True)
class Movements:
    """The log, summed."""

    #: Every account the log opens or moves, with the balance it sums to.
    balances: dict[UUID, Balance]
    #: The currency of every account the log opens.
    currencies: dict[UUID, str]
    #: Per transfer the log reverses, the sum of its reversals.
    reversed: dict[UUID, Decimal]
    #: The first event that :meth:`Ledger.apply` could not apply, because
    #: it moves an account not opened before it or releases a transfer no
    #: earlier event held, and why; None when there is none.
    unapplicable: tuple[int, str] | None


async def sum_movements(conn: Conn, head: int) -> Movements:
    """The log up to seq ``head`` in ``conn``'s snapshot, summed (see the
    module's doc). Must run inside a transaction when its snapshot matters
    to the caller."""
    summed = await conn.fetch(_SUMS, _MOVING, _HOLDS, _RELEASES, _POSTS, AccountCreated.type, head)
    # An event that names no account moves none; reading the chain names it.
    rows = [r for r in summed if r["account_id"] is not None]
    balances = {r["account_id"]: Balance(*(r[c] for c in BALANCE_TOTALS)) for r in rows}
    currencies = {r["account_id"]: r["currency"] for r in rows if r["currency"] is not None}
    reversals = await conn.fetch(_REVERSALS, TransferReversed.type, head)
    reversed_ = {r["transfer_id"]: r["amount"] for r in reversals}
    return Movements(balances, currencies, reversed_, _unapplicable(rows))


def _unapplicable(rows: list[asyncpg.Record]) -> tuple[int, str] | None:
    unopened = [(r["unopened_seq"], r["account_id"]) for r in rows if r["unopened_seq"] is not None]
    unheld = [r["unheld_seq"] for r in rows if r["unheld_seq"] is not None]
    reasons = [(seq, f"it moves account {account_id}, which no earlier event opened") for seq, account_id in unopened]
    reasons += [(seq, "it releases a transfer that no earlier event held") for seq in unheld]
    return min(reasons, default=None)
