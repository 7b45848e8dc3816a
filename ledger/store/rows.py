"""Rows of the projections, and the domain objects they hold."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..domain.model import Account, AccountFlags, Balance, Transfer
from .tables import ACCOUNTS, BALANCE_TOTALS, TRANSFERS

#: Accounts joined with their balances, as :func:`account_from_row` reads them.
ACCOUNT_SELECT = (
    f"SELECT {ACCOUNTS.column_list(prefix='a.')}, {', '.join('b.' + c for c in BALANCE_TOTALS)} "
    "FROM accounts a JOIN balances b ON b.account_id = a.id"
)

TRANSFER_SELECT = TRANSFERS.select()


def account_row(account: Account, *, seq: int) -> dict[str, Any]:
    """The ``accounts`` row of ``account``, opened by the event ``seq``."""
    flags = account.flags
    return {
        "id": account.id,
        "currency": account.currency,
        "scale": account.scale,
        "debits_must_not_exceed_credits": flags.debits_must_not_exceed_credits,
        "credits_must_not_exceed_debits": flags.credits_must_not_exceed_debits,
        "metadata": account.metadata,
        "closed": account.closed,
        "seq": seq,
        "created_at": account.created_at,
    }


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
