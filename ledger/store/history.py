"""Point-in-time reads of the history: a balance as of a past seq, the seq
that opened an account, the head. The streams' lines are :mod:`.lines`.
"""

from __future__ import annotations

from uuid import UUID

from ..domain.model import Balance
from .connection import Conn
from .head import read_head
from .rows import balance_from_row

_BALANCE_AS_OF = """
    SELECT debits_posted, credits_posted, debits_pending, credits_pending
    FROM entries WHERE account_id = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1
"""
_OPENED = "SELECT seq FROM accounts WHERE id = $1"


async def balance_as_of(conn: Conn, account_id: UUID, seq: int) -> Balance:
    """The account's balance right after event ``seq``: that of its last entry
    at or before ``seq``, all zero before its first."""
    row = await conn.fetchrow(_BALANCE_AS_OF, account_id, seq)
    return Balance() if row is None else balance_from_row(row)


async def opened_seq(conn: Conn, account_id: UUID) -> int | None:
    """The seq of the event that opened the account."""
    seq: int | None = await conn.fetchval(_OPENED, account_id)
    return seq


async def head_seq(conn: Conn) -> int:
    """The seq of the last event, as ``conn`` sees it."""
    return (await read_head(conn)).seq
