"""What the ledger records. The event log is the truth; every projection
(accounts, balances, transfers, entries) is a fold of these events.

Each event knows its ``type`` (as stored), its ``stream_id`` (the account or
transfer it is about) and its ``data``: its fields, stored as a JSON object,
UUIDs and amounts as strings (amounts at their accounts' scale).

========================== ===================================================
type                       fact
========================== ===================================================
account_created            an account was opened
account_closed             an account was closed; no transfer may touch it
transfer_posted            money moved at once from debit to credit account
transfer_pending           money was held (pending) on both accounts
transfer_reversed          money moved back, in part or whole, of a posted
                           transfer (``reverses``), between its accounts swapped
pending_transfer_posted    a held ``amount`` moved to posted, the rest released
pending_transfer_voided    a held amount was released on request
pending_transfer_expired   a held amount was released at its deadline
========================== ===================================================

What an event does to balances is stated once, by three flags of its class
that :meth:`ledger.domain.ledger.Ledger.apply` and the set-based sums of
reconciliation (:mod:`ledger.store.movements`) both read. Each moves the
debit side of the event's debit account and the credit side of its credit
account alike: ``holds`` adds the event's amount to pending, ``releases``
takes the amount the transfer held off pending, ``posts`` adds the event's
amount to posted.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Self
from uuid import UUID

import msgspec

from .model import AccountFlags, TransferStatus


class _Event(msgspec.Struct, frozen=True, gc=False):
    """Events are immutable msgspec structs, which the garbage collector
    leaves alone (they refer to nothing that could refer back to them): one
    is made per command recorded."""

    type: ClassVar[str]
    #: The field holding the id of what the event is about: its ``stream_id``.
    _subject: ClassVar[str]
    #: What the event does to its accounts' balances (see the module's doc).
    holds: ClassVar[bool] = False
    releases: ClassVar[bool] = False
    posts: ClassVar[bool] = False

    @property
    def stream_id(self) -> UUID:
        subject: UUID = getattr(self, self._subject)
        return subject

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Self:
        return msgspec.convert(data, cls)


class _AccountEvent(_Event, frozen=True):
    _subject = "account_id"


class _TransferEvent(_Event, frozen=True):
    _subject = "transfer_id"


class AccountCreated(_AccountEvent, frozen=True):
    type: ClassVar[str] = "account_created"

    account_id: UUID
    currency: str
    scale: int
    flags: AccountFlags
    metadata: dict[str, Any]


class AccountClosed(_AccountEvent, frozen=True):
    type: ClassVar[str] = "account_closed"

    account_id: UUID


class _TransferMade(_TransferEvent, frozen=True):
    """A transfer request accepted: what it moves, between which accounts."""

    transfer_id: UUID
    debit_account_id: UUID
    credit_account_id: UUID
    amount: Decimal
    currency: str
    code: str | None
    metadata: dict[str, Any]


class TransferPosted(_TransferMade, frozen=True):
    """Money moved at once from the debit account to the credit account."""

    type: ClassVar[str] = "transfer_posted"
    posts = True


class TransferPending(_TransferMade, frozen=True):
    """``amount`` held on both accounts until posted, voided or expired; the
    deadline is ``timeout_seconds`` after the event's ``recorded_at``."""

    type: ClassVar[str] = "transfer_pending"
    holds = True

    timeout_seconds: int | None


class TransferReversed(_TransferMade, frozen=True):
    """Money moved at once back of the posted transfer ``reverses``: its credit
    account is this one's debit account, its debit account this one's credit."""

    type: ClassVar[str] = "transfer_reversed"
    posts = True

    reverses: UUID


class PendingDecided(_TransferEvent, frozen=True):
    """A pending transfer decided: its whole held amount is released. When
    posted, ``amount`` is what moves to posted; when voided or expired, it is
    the amount released. The accounts and currency are repeated so that a
    consumer of the log needs no lookup."""

    #: The transfer's status afterwards.
    status: ClassVar[str]
    releases = True

    transfer_id: UUID
    debit_account_id: UUID
    credit_account_id: UUID
    amount: Decimal
    currency: str


class PendingPosted(PendingDecided, frozen=True):
    type: ClassVar[str] = "pending_transfer_posted"
    status: ClassVar[str] = TransferStatus.POSTED
    posts = True


class PendingVoided(PendingDecided, frozen=True):
    type: ClassVar[str] = "pending_transfer_voided"
    status: ClassVar[str] = TransferStatus.VOIDED


class PendingExpired(PendingDecided, frozen=True):
    type: ClassVar[str] = "pending_transfer_expired"
    status: ClassVar[str] = TransferStatus.EXPIRED


Event = (
    AccountCreated
    | AccountClosed
    | TransferPosted
    | TransferPending
    | TransferReversed
    | PendingPosted
    | PendingVoided
    | PendingExpired
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        AccountCreated,
        AccountClosed,
        TransferPosted,
        TransferPending,
        TransferReversed,
        PendingPosted,
        PendingVoided,
        PendingExpired,
    )
}


def event_from_data(type_: str, data: dict[str, Any]) -> Event:
    return EVENT_TYPES[type_].from_data(data)


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as the log holds it: its place, its time, who caused it."""

    seq: int
    event: Event
    recorded_at: datetime
    #: Who appended it: the request id (and, with tokens, the token's name).
    metadata: dict[str, Any]
