"""Point reads of the projections."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from ..domain.model import Account, Transfer
from .rows import ACCOUNT_SELECT, TRANSFER_SELECT, account_from_row, transfer_from_row

_ACCOUNT = ACCOUNT_SELECT + " WHERE a.id = $1"
_ACCOUNTS_PAGE = (
    ACCOUNT_SELECT
    + """ WHERE ($1::text IS NULL OR a.currency = $1)
          AND ($2::uuid IS NULL OR a.id > $2)
        ORDER BY a.id LIMIT $3"""
)
_TRANSFER = TRANSFER_SELECT + " WHERE id = $1"


async def get_account(pool: asyncpg.Pool, account_id: UUID) -> Account | None:
    row = await pool.fetchrow(_ACCOUNT, account_id)
    return None if row is None else account_from_row(row)


async def list_accounts(pool: asyncpg.Pool, *, currency: str | None, after: UUID | None, limit: int) -> list[Account]:
    """Accounts in id order after ``after``, at most ``limit`` of them."""
    return [account_from_row(r) for r in await pool.fetch(_ACCOUNTS_PAGE, currency, after, limit)]


async def get_transfer(pool: asyncpg.Pool, transfer_id: UUID) -> Transfer | None:
    row = await pool.fetchrow(_TRANSFER, transfer_id)
    return None if row is None else transfer_from_row(row)
