"""What callers ask the ledger to do. A command names its own subject by id,
so running it twice can never record it twice: the id is the idempotency key
(of the transfer, for the decisions on a pending transfer)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

from .model import AccountFlags


class _Command(msgspec.Struct, frozen=True, gc=False):
    """Commands are immutable msgspec structs: one is built per item of every
    request, and they refer to nothing that could refer back to them, so the
    garbage collector leaves them alone."""


class OpenAccount(_Command, frozen=True):
    id: UUID
    currency: str
    scale: int
    flags: AccountFlags
    metadata: dict[str, Any]


class CloseAccount(_Command, frozen=True):
    """Refuse every later transfer touching the account; only without pending amounts."""

    id: UUID


class MakeTransfer(_Command, frozen=True):
    """Move ``amount`` at once or, with ``pending``, hold it until a decision."""

    id: UUID
    debit_account_id: UUID
    credit_account_id: UUID
    amount: Decimal
    currency: str
    code: str | None
    metadata: dict[str, Any]
    pending: bool = False
    timeout_seconds: int | None = None


class PostTransfer(_Command, frozen=True):
    """Move a pending transfer's ``amount`` (default: all of it) to posted and
    release the rest."""

    id: UUID
    amount: Decimal | None = None


class VoidTransfer(_Command, frozen=True):
    """Release a pending transfer's whole amount."""

    id: UUID


class ExpireTransfer(_Command, frozen=True):
    """Release a pending transfer whose deadline has passed. Issued by the
    service itself; a transfer that is already decided is left as it is."""

    id: UUID


class ReverseTransfer(_Command, frozen=True):
    """Move back ``amount`` (default: all of a posted transfer not yet
    reversed) of the posted transfer ``original_id``, as a new posted
    transfer ``id`` between the same accounts, swapped."""

    id: UUID
    original_id: UUID
    amount: Decimal | None = None
    code: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


Decision = PostTransfer | VoidTransfer | ExpireTransfer
Command = OpenAccount | CloseAccount | MakeTransfer | ReverseTransfer | Decision


def account_ids(command: Command) -> tuple[UUID, ...]:
    """The accounts a command names. A decision names only its transfer; the
    accounts it moves are that transfer's."""
    if isinstance(command, (OpenAccount, CloseAccount)):
        return (command.id,)
    if isinstance(command, MakeTransfer):
        return (command.debit_account_id, command.credit_account_id)
    return ()


def created_transfer(command: Command) -> UUID | None:
    """The id of the transfer ``command`` would create, if it creates one:
    new, unless the command repeats one already decided."""
    return command.id if isinstance(command, (MakeTransfer, ReverseTransfer)) else None


def transfer_ids(command: Command, *, created: bool = True) -> tuple[UUID, ...]:
    """The transfers a command reads, and (with ``created``) the one it
    would create (:func:`created_transfer`). A reversal moves its
    original's accounts (see :func:`account_ids`)."""
    if isinstance(command, (OpenAccount, CloseAccount)):
        return ()
    new = created_transfer(command)
    if new is None:
        return (command.id,)
    read = (command.original_id,) if isinstance(command, ReverseTransfer) else ()
    return (new, *read) if created else read
