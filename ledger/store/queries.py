"""Finding transfers and accounts by what they hold, a page at a time.

A page is a keyset read: transfers in seq order (the order they were
created) after, or before, the last one of the page before; accounts in id
order. Each filter that a caller pages through is served by an index: an
account's transfers, on either side or one, by the ``entries`` key
``(account_id, seq)`` (a transfer's creating entries are at its seq, so that
a page stays a page's work however many transfers the account has, and the
write path keeps no index more for it); ``(code, seq)``, ``(reverses, seq)``,
``created_at``, ``seq``, and GIN indexes (``jsonb_path_ops``) for metadata
containment (migrations 0007 and 0008). The other filters (currency, status)
narrow those reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias
from uuid import UUID

import asyncpg

from ..domain.model import Account, Transfer
from .connection import Conn
from .rows import ACCOUNT_SELECT, TRANSFER_SELECT, account_from_row, transfer_from_row
from .tables import TRANSFERS, Placeholders

#: What a query runs on: a connection, or a pool lending one.
Reader: TypeAlias = "Conn | asyncpg.Pool[asyncpg.Record]"


@dataclass(frozen=True, slots=True)
class TransferFilter:
    """What a transfer must match: every field that is not None, and every
    ``metadata`` key holding its string value."""

    account_id: UUID | None = None
    debit_account_id: UUID | None = None
    credit_account_id: UUID | None = None
    code: str | None = None
    currency: str | None = None
    status: str | None = None
    #: ``created_from <= created_at < created_to``.
    created_from: datetime | None = None
    created_to: datetime | None = None
    reverses: UUID | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AccountFilter:
    currency: str | None = None
    closed: bool | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class _Arguments:
    """A statement's parameters, each numbered as it is written and given its
    value there, so that no name is spelled twice."""

    def __init__(self) -> None:
        self._placeholders = Placeholders()
        self._values: dict[str, Any] = {}

    def __call__(self, type_: str, name: str, value: Any) -> str:
        self._values[name] = value
        return self._placeholders.one(type_, name)

    def values(self) -> list[Any]:
        return self._placeholders.arguments(self._values)


def _transfer_conditions(f: TransferFilter, arg: _Arguments) -> list[str]:
    """The SQL conditions of ``f`` on ``transfers AS t`` but its account."""
    equal = {
        "debit_account_id": ("uuid", f.debit_account_id),
        "credit_account_id": ("uuid", f.credit_account_id),
        "code": ("text", f.code),
        "currency": ("text", f.currency),
        "status": ("text", f.status),
        "reverses": ("uuid", f.reverses),
    }
    conditions = [f"t.{c} = {arg(type_, c, value)}" for c, (type_, value) in equal.items() if value is not None]
    if f.created_from is not None:
        conditions.append(f"t.created_at >= {arg('timestamptz', 'created_from', f.created_from)}")
    if f.created_to is not None:
        conditions.append(f"t.created_at < {arg('timestamptz', 'created_to', f.created_to)}")
    if f.metadata:
        conditions.append(f"t.metadata @> {arg('jsonb', 'metadata', f.metadata)}")
    return conditions


#: The entries a transfer's creation makes, at its seq: one per side.
_CREATING = "ARRAY['transfer_posted', 'transfer_pending', 'transfer_reversed']"


def transfers_page_query(
    f: TransferFilter, *, after_seq: int | None, descending: bool, limit: int
) -> tuple[str, list[Any]]:
    """The statement that reads a page of at most ``limit`` transfers
    matching ``f``, and its arguments."""
    arg = _Arguments()
    direction = "DESC" if descending else "ASC"
    before_or_after = "<" if descending else ">"
    account, side = _account_and_side(f)
    if account is None:
        conditions = _transfer_conditions(f, arg)
        if after_seq is not None:
            conditions.append(f"t.seq {before_or_after} {arg('bigint', 'after_seq', after_seq)}")
        where = " AND ".join(conditions) or "true"
        query = f"{TRANSFER_SELECT} AS t WHERE {where} ORDER BY t.seq {direction} LIMIT {arg('bigint', 'limit', limit)}"
        return query, arg.values()
    # An account's transfers: its creating entries, in seq order, and their transfers.
    conditions = [f"e.account_id = {arg('uuid', 'account', account)}", f"e.type = ANY({_CREATING})"]
    if side is not None:
        conditions.append(f"e.side = '{side}'")
    conditions += _transfer_conditions(f, arg)
    if after_seq is not None:
        conditions.append(f"e.seq {before_or_after} {arg('bigint', 'after_seq', after_seq)}")
    query = (
        f"SELECT {TRANSFERS.column_list(prefix='t.')} FROM entries AS e JOIN transfers AS t ON t.id = e.transfer_id"
        f" WHERE {' AND '.join(conditions)} ORDER BY e.seq {direction} LIMIT {arg('bigint', 'limit', limit)}"
    )
    return query, arg.values()


def _account_and_side(f: TransferFilter) -> tuple[UUID | None, str | None]:
    """The account whose entries a query of ``f`` reads, and on which side
    (None: either); no account if ``f`` names none, or one on each side."""
    if f.account_id is not None:
        return f.account_id, None
    if f.debit_account_id is not None and f.credit_account_id is None:
        return f.debit_account_id, "debit"
    if f.credit_account_id is not None and f.debit_account_id is None:
        return f.credit_account_id, "credit"
    return None, None


async def find_transfers(
    conn: Reader, f: TransferFilter, *, after_seq: int | None, descending: bool, limit: int
) -> list[Transfer]:
    """At most ``limit`` transfers matching ``f``, in seq order (newest first
    if ``descending``), after (or before) ``after_seq``."""
    query, arguments = transfers_page_query(f, after_seq=after_seq, descending=descending, limit=limit)
    return [transfer_from_row(row) for row in await conn.fetch(query, *arguments)]


def accounts_page_query(f: AccountFilter, *, after: UUID | None, limit: int) -> tuple[str, list[Any]]:
    """The statement that reads a page of at most ``limit`` accounts matching
    ``f``, and its arguments."""
    arg = _Arguments()
    conditions = []
    if f.currency is not None:
        conditions.append(f"a.currency = {arg('text', 'currency', f.currency)}")
    if f.closed is not None:
        conditions.append(f"a.closed = {arg('boolean', 'closed', f.closed)}")
    if f.metadata:
        conditions.append(f"a.metadata @> {arg('jsonb', 'metadata', f.metadata)}")
    if after is not None:
        conditions.append(f"a.id > {arg('uuid', 'after', after)}")
    where = " AND ".join(conditions) or "true"
    return f"{ACCOUNT_SELECT} WHERE {where} ORDER BY a.id LIMIT {arg('bigint', 'limit', limit)}", arg.values()


async def find_accounts(conn: Reader, f: AccountFilter, *, after: UUID | None, limit: int) -> list[Account]:
    """At most ``limit`` accounts matching ``f``, in id order after ``after``."""
    query, arguments = accounts_page_query(f, after=after, limit=limit)
    return [account_from_row(row) for row in await conn.fetch(query, *arguments)]
