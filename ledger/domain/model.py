"""The ledger's state: accounts with their balances, and transfers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

from .money import ZERO


class Balance(msgspec.Struct, gc=False):
    """An account's four running totals. Posted amounts are final; pending
    amounts are held by two-phase transfers not yet decided.

    A msgspec struct, left alone by the garbage collector (it holds only
    amounts): every entry carries a copy of one."""

    debits_posted: Decimal = ZERO
    credits_posted: Decimal = ZERO
    debits_pending: Decimal = ZERO
    credits_pending: Decimal = ZERO

    def copy(self) -> Balance:
        return Balance(self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending)


@dataclass(frozen=True, slots=True)
class AccountFlags:
    #: Refuse a transfer that would leave ``debits_posted + debits_pending >
    #: credits_posted``: the account can never be overdrawn.
    debits_must_not_exceed_credits: bool = False
    #: Refuse a transfer that would leave ``credits_posted + credits_pending >
    #: debits_posted``.
    credits_must_not_exceed_debits: bool = False

    def as_dict(self) -> dict[str, bool]:
        """The flags as the API shows them and the log stores them."""
        return dataclasses.asdict(self)


@dataclass(slots=True)
class Account:
    id: UUID
    currency: str
    scale: int
    flags: AccountFlags
    metadata: dict[str, Any]
    created_at: datetime
    closed: bool = False
    balance: Balance = field(default_factory=Balance)


class TransferStatus:
    #: Moved: at once, or a pending transfer posted (``posted_amount`` of it).
    POSTED = "posted"
    #: Held on both accounts, awaiting a post, a void or its deadline.
    PENDING = "pending"
    #: Released on request.
    VOIDED = "voided"
    #: Released by the service at its deadline.
    EXPIRED = "expired"


class Transfer(msgspec.Struct, frozen=True, gc=False):
    """A transfer as its events left it: immutable, and referring to nothing
    that could refer back to it, hence left alone by the garbage collector
    (``gc=False``). Its fields are the ``transfers`` table's columns
    (:data:`ledger.store.tables.TRANSFERS`)."""

    id: UUID
    debit_account_id: UUID
    credit_account_id: UUID
    amount: Decimal
    currency: str
    code: str | None
    metadata: dict[str, Any]
    pending: bool
    timeout_seconds: int | None
    status: str
    #: Position in the event log of the event that recorded the transfer.
    seq: int
    created_at: datetime
    #: When a pending transfer with a timeout can no longer be posted.
    expires_at: datetime | None = None
    #: What moved to posted: the amount, or the part of it a post named.
    posted_amount: Decimal | None = None
    #: The seq of the event that posted, voided or expired a pending transfer.
    decided_seq: int | None = None
    #: The transfer this one reverses (it is a reversal), else None.
    reverses: UUID | None = None
    #: The sum of this transfer's reversals.
    reversed_amount: Decimal = ZERO
