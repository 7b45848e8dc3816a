"""Point reads of the projections."""

from __future__ import annotations

from uuid import UUID

from ..domain.model import Account, Transfer
from .connection import Conn
from .rows import ACCOUNT_SELECT, TRANSFER_SELECT, account_from_row, transfer_from_row

_ACCOUNT = ACCOUNT_SELECT + " WHERE a.id = $1"
_TRANSFER = TRANSFER_SELECT + " WHERE id = $1"


async def get_account(conn: Conn, account_id: UUID) -> Account | None:
    row = await conn.fetchrow(_ACCOUNT, account_id)
    return None if row is None else account_from_row(row)


async def get_transfer(conn: Conn, transfer_id: UUID) -> Transfer | None:
    row = await conn.fetchrow(_TRANSFER, transfer_id)
    return None if row is None else transfer_from_row(row)
