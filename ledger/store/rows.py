"""Rows of the projections, and the domain objects they hold."""

from __future__ import annotations

import asyncpg

from ..domain.model import Account, AccountFlags, Balance, Transfer

#: Accounts joined with their balances, as :func:`account_from_row` reads them.
ACCOUNT_SELECT = """
    SELECT a.id, a.currency, a.scale, a.debits_must_not_exceed_credits,
           a.credits_must_not_exceed_debits, a.metadata, a.closed, a.created_at,
           b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending
    FROM accounts a JOIN balances b ON b.account_id = a.id
"""

TRANSFER_SELECT = """
    SELECT id, debit_account_id, credit_account_id, amount, currency, code, metadata,
           pending, timeout_seconds, status, seq, created_at, expires_at, posted_amount,
           decided_seq
    FROM transfers
"""


def account_from_row(row: asyncpg.Record) -> Account:
    return Account(
        id=row["id"],
        currency=row["currency"],
        scale=row["scale"],
        flags=AccountFlags(
            debits_must_not_exceed_credits=row["debits_must_not_exceed_credits"],
            credits_must_not_exceed_debits=row["credits_must_not_exceed_debits"],
        ),
        metadata=row["metadata"],
        created_at=row["created_at"],
        closed=row["closed"],
        balance=balance_from_row(row),
    )


def balance_from_row(row: asyncpg.Record) -> Balance:
    """The four totals of a ``balances`` or ``entries`` row."""
    return Balance(
        debits_posted=row["debits_posted"],
        credits_posted=row["credits_posted"],
        debits_pending=row["debits_pending"],
        credits_pending=row["credits_pending"],
    )


def transfer_from_row(row: asyncpg.Record) -> Transfer:
    return Transfer(**dict(row.items()))
