"""What callers ask the ledger to do. A command carries its own id, so running
it twice can never record it twice: the id is the idempotency key."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from .model import AccountFlags


@dataclass(frozen=True, slots=True)
class OpenAccount:
    id: UUID
    currency: str
    scale: int
    flags: AccountFlags
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MakeTransfer:
    id: UUID
    debit_account_id: UUID
    credit_account_id: UUID
    amount: Decimal
    currency: str
    code: str | None
    metadata: dict[str, Any]
    pending: bool = False
    timeout_seconds: int | None = None


Command = OpenAccount | MakeTransfer


def account_ids(command: Command) -> tuple[UUID, ...]:
    """The accounts a command reads or changes."""
    if isinstance(command, OpenAccount):
        return (command.id,)
    return (command.debit_account_id, command.credit_account_id)


def transfer_ids(command: Command) -> tuple[UUID, ...]:
    """The transfers a command reads or creates."""
    if isinstance(command, MakeTransfer):
        return (command.id,)
    return ()
