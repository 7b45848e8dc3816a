"""What the ledger records. The event log is the truth; every projection
(accounts, balances, transfers, entries) is a fold of these events.

Each event knows its ``type`` (as stored), its ``stream_id`` (the object it is
about) and how to turn itself into the JSON-ready ``data`` stored with it and
back. Amounts are stored as strings at their account's scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

from .model import AccountFlags


@dataclass(frozen=True, slots=True)
class AccountCreated:
    type: ClassVar[str] = "account_created"

    account_id: UUID
    currency: str
    scale: int
    flags: AccountFlags
    metadata: dict[str, Any]

    @property
    def stream_id(self) -> UUID:
        return self.account_id

    def to_data(self) -> dict[str, Any]:
        return {
            "account_id": str(self.account_id),
            "currency": self.currency,
            "scale": self.scale,
            "flags": self.flags.as_dict(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> AccountCreated:
        return cls(
            account_id=UUID(data["account_id"]),
            currency=data["currency"],
            scale=data["scale"],
            flags=AccountFlags(**data["flags"]),
            metadata=data["metadata"],
        )


@dataclass(frozen=True, slots=True)
class TransferPosted:
    """Money moved at once from the debit account to the credit account."""

    type: ClassVar[str] = "transfer_posted"

    transfer_id: UUID
    debit_account_id: UUID
    credit_account_id: UUID
    amount: Decimal
    currency: str
    code: str | None
    metadata: dict[str, Any]

    @property
    def stream_id(self) -> UUID:
        return self.transfer_id

    def to_data(self) -> dict[str, Any]:
        return {
            "transfer_id": str(self.transfer_id),
            "debit_account_id": str(self.debit_account_id),
            "credit_account_id": str(self.credit_account_id),
            "amount": str(self.amount),
            "currency": self.currency,
            "code": self.code,
            "metadata": self.metadata,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> TransferPosted:
        return cls(
            transfer_id=UUID(data["transfer_id"]),
            debit_account_id=UUID(data["debit_account_id"]),
            credit_account_id=UUID(data["credit_account_id"]),
            amount=Decimal(data["amount"]),
            currency=data["currency"],
            code=data["code"],
            metadata=data["metadata"],
        )


Event = AccountCreated | TransferPosted

EVENT_TYPES: dict[str, type[AccountCreated] | type[TransferPosted]] = {
    cls.type: cls for cls in (AccountCreated, TransferPosted)
}


def event_from_data(type_: str, data: dict[str, Any]) -> Event:
    return EVENT_TYPES[type_].from_data(data)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as the log holds it: its place, its time, who caused it."""

    seq: int
    event: Event
    recorded_at: datetime
    #: Who appended it: the request id (and, with tokens, the token's name).
    metadata: dict[str, Any]
