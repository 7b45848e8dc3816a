"""The decision of each command against the current balances.

:class:`Ledger` is an in-memory view of the accounts and transfers a batch
touches (or, when replaying, of the whole log). :meth:`Ledger.decide` decides
one command: it either refuses it with a :class:`Code`, recognises it as a
replay of what is already recorded, or records a new event and applies it.
:meth:`Ledger.apply` is the only place state changes, so deciding live and
folding the stored log can never disagree.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import msgspec

from . import money
from .codes import Code
from .commands import (
    CloseAccount,
    Command,
    ExpireTransfer,
    MakeTransfer,
    OpenAccount,
    PostTransfer,
    ReverseTransfer,
    VoidTransfer,
)
from .events import (
    AccountClosed,
    AccountCreated,
    Event,
    PendingDecided,
    PendingExpired,
    PendingPosted,
    PendingVoided,
    RecordedEvent,
    TransferPending,
    TransferPosted,
    TransferReversed,
)
from .model import Account, Balance, Transfer, TransferStatus


class Entry(msgspec.Struct, frozen=True, gc=False):
    """One side of a movement on one account, with the balance right after it.

    A msgspec struct, like :class:`~ledger.domain.model.Transfer` (and, like
    it, left alone by the garbage collector): two are built per transfer
    appended."""

    account_id: UUID
    seq: int
    transfer_id: UUID
    type: str
    side: str
    amount: Decimal
    balance: Balance
    recorded_at: datetime


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """The command was accepted: ``record`` is its new event."""

    record: RecordedEvent
    entries: tuple[Entry, ...]
    #: The account or transfer as the event left it.
    subject: Account | Transfer


class Existing(msgspec.Struct, frozen=True, gc=False):
    """Nothing to record: the command repeats one already recorded with the
    same fields, or asks for a state its subject is already in."""

    subject: Account | Transfer


class Refused(msgspec.Struct, frozen=True, gc=False):
    code: Code
    message: str


Outcome = Recorded | Existing | Refused


def snapshot(subject: Account | Transfer) -> Account | Transfer:
    """A copy that later events cannot change."""
    if isinstance(subject, Account):
        return _account_copy(subject)
    return subject


def _account_copy(account: Account) -> Account:
    return dataclasses.replace(account, balance=account.balance.copy())


class Ledger:
    """Accounts and transfers in memory, and the head of the log they reflect."""

    def __init__(
        self,
        accounts: Iterable[Account] = (),
        transfers: Iterable[Transfer] = (),
        *,
        last_seq: int = 0,
    ) -> None:
        self.accounts: dict[UUID, Account] = {a.id: a for a in accounts}
        self.transfers: dict[UUID, Transfer] = {t.id: t for t in transfers}
        #: The seq of the last event applied; the next one recorded is ``last_seq + 1``.
        self.last_seq = last_seq
        # While an atomic group runs: what each account and transfer was
        # before the group first changed it (None: it did not exist).
        self._undo: _Undo | None = None

    # -- deciding ---------------------------------------------------------

    def decide(self, command: Command, *, now: datetime, metadata: dict[str, Any]) -> Outcome:
        """Decide ``command`` at time ``now``; if accepted, record its event at
        ``last_seq + 1``."""
        decision = self._verdict(command, now)
        if isinstance(decision, (Existing, Refused)):
            return decision
        record = RecordedEvent(seq=self.last_seq + 1, event=decision, recorded_at=now, metadata=metadata)
        entries = self.apply(record)
        return Recorded(record, entries, snapshot(self._subject(decision)))

    def decide_all(
        self,
        commands: Sequence[Command],
        *,
        now: datetime,
        metadata: dict[str, Any],
        atomic: bool = False,
    ) -> list[Outcome]:
        """Decide ``commands`` in order, each seeing what earlier ones did.

        With ``atomic``, either every command is accepted or none is: the
        first refusal keeps its own code, every other command is refused with
        ``linked_transfer_failed``, and the ledger is left as it was.
        """
        if not atomic:
            return [self.decide(c, now=now, metadata=metadata) for c in commands]
        self._undo = _Undo(last_seq=self.last_seq)
        try:
            outcomes: list[Outcome] = []
            for index, command in enumerate(commands):
                outcome = self.decide(command, now=now, metadata=metadata)
                if isinstance(outcome, Refused):
                    self._roll_back(self._undo)
                    linked = Refused(
                        Code.LINKED_TRANSFER_FAILED,
                        f"not recorded: item {index} of this atomic batch failed ({outcome.code})",
                    )
                    return [outcome if i == index else linked for i in range(len(commands))]
                outcomes.append(outcome)
            return outcomes
        finally:
            self._undo = None

    def _verdict(self, command: Command, now: datetime) -> Event | Existing | Refused:
        match command:
            case OpenAccount():
                return self._decide_open_account(command)
            case CloseAccount():
                return self._decide_close_account(command)
            case MakeTransfer():
                return self._decide_transfer(command)
            case ReverseTransfer():
                return self._decide_reversal(command)
            case PostTransfer():
                return self._decide_post(command, now)
            case VoidTransfer():
                return self._decide_void(command, now)
            case ExpireTransfer():
                return self._decide_expire(command, now)

    def _decide_open_account(self, c: OpenAccount) -> Event | Existing | Refused:
        existing = self.accounts.get(c.id)
        if existing is not None:
            differing = _differing(existing, c, "currency", "scale", "flags", "metadata")
            if differing:
                return _exists_with_different_fields("account", c.id, differing)
            return Existing(snapshot(existing))
        return AccountCreated(c.id, c.currency, c.scale, c.flags, c.metadata)

    def _decide_close_account(self, c: CloseAccount) -> Event | Existing | Refused:
        account = self.accounts.get(c.id)
        if account is None:
            return Refused(Code.ACCOUNT_NOT_FOUND, f"account {c.id} does not exist")
        if account.closed:
            return Existing(snapshot(account))
        b = account.balance
        if b.debits_pending or b.credits_pending:
            return Refused(
                Code.ACCOUNT_HAS_PENDING,
                f"account {c.id} holds pending debits of "
                f"{money.format_amount(b.debits_pending, account.scale)} and credits of "
                f"{money.format_amount(b.credits_pending, account.scale)}: post or void them first",
            )
        return AccountClosed(c.id)

    def _decide_transfer(self, c: MakeTransfer) -> Event | Existing | Refused:
        if c.amount <= 0:
            return _not_positive(c.amount)
        if c.debit_account_id == c.credit_account_id:
            return Refused(Code.ACCOUNTS_MUST_BE_DIFFERENT, "debit and credit account are the same")
        existing = self.transfers.get(c.id)
        if existing is not None:
            differing = _differing(
                existing,
                c,
                "debit_account_id",
                "credit_account_id",
                "amount",
                "currency",
                "code",
                "metadata",
                "pending",
                "timeout_seconds",
            )
            if existing.reverses is not None:  # a reversal's id: a plain transfer reverses nothing
                differing.append("reverses")
            if differing:
                return _exists_with_different_fields("transfer", c.id, differing)
            return Existing(existing)
        debit = self.accounts.get(c.debit_account_id)
        if debit is None:
            return Refused(Code.DEBIT_ACCOUNT_NOT_FOUND, f"debit account {c.debit_account_id} does not exist")
        credit = self.accounts.get(c.credit_account_id)
        if credit is None:
            return Refused(Code.CREDIT_ACCOUNT_NOT_FOUND, f"credit account {c.credit_account_id} does not exist")
        for account in (debit, credit):
            if account.currency != c.currency:
                return Refused(
                    Code.CURRENCY_MISMATCH,
                    f"account {account.id} holds {account.currency}, the transfer is in {c.currency}",
                )
        if debit.scale != credit.scale:
            return Refused(
                Code.CURRENCY_MISMATCH,
                f"the debit account has scale {debit.scale}, the credit account {credit.scale}",
            )
        amount = _scaled(c.amount, debit.scale)
        if isinstance(amount, Refused):
            return amount
        for account in (debit, credit):
            if account.closed:
                return Refused(Code.ACCOUNT_CLOSED, f"account {account.id} is closed")
        refusal = _check_limits(debit, credit, c.amount)
        if refusal is not None:
            return refusal
        # The accounts' own id objects: equal to the command's, and the keys
        # the ledger holds them by, which every later lookup then finds by
        # identity (a UUID compares and hashes in Python).
        # In the order the event declares its fields (transfer, debit, credit,
        # amount, currency, code, metadata).
        fields = (c.id, debit.id, credit.id, amount, c.currency, c.code, c.metadata)
        if c.pending:
            return TransferPending(*fields, timeout_seconds=c.timeout_seconds)
        return TransferPosted(*fields)

    def _decide_reversal(self, c: ReverseTransfer) -> Event | Existing | Refused:
        if c.amount is not None and c.amount <= 0:
            return _not_positive(c.amount)
        existing = self.transfers.get(c.id)
        if existing is not None:
            # A replay that left the amount out took all that was left when
            # it was recorded: only an amount given is compared.
            fields = ["reverses", "code", "metadata"] + (["amount"] if c.amount is not None else [])
            given = {"reverses": c.original_id, "code": c.code, "metadata": c.metadata, "amount": c.amount}
            differing = [f for f in fields if not _same(getattr(existing, f), given[f])]
            if differing:
                return _exists_with_different_fields("transfer", c.id, differing)
            return Existing(existing)
        original = self.transfers.get(c.original_id)
        if original is None:
            return _transfer_not_found(c.original_id)
        if original.status != TransferStatus.POSTED or original.posted_amount is None:
            return Refused(
                Code.TRANSFER_NOT_POSTED,
                f"transfer {original.id} is {original.status}: only a posted transfer can be reversed",
            )
        # The original's accounts, swapped: what it credited is debited back.
        debit = self.accounts[original.credit_account_id]
        credit = self.accounts[original.debit_account_id]
        left = money.sub(original.posted_amount, original.reversed_amount)
        amount = _scaled(left if c.amount is None else c.amount, debit.scale)
        if isinstance(amount, Refused):
            return amount
        if amount > left or amount <= 0:
            return Refused(
                Code.REVERSAL_EXCEEDS_AMOUNT,
                f"cannot reverse {money.format_amount(amount, debit.scale)} of transfer {original.id}: "
                f"{money.format_amount(left, debit.scale)} of it is left to reverse",
            )
        for account in (debit, credit):
            if account.closed:
                return Refused(Code.ACCOUNT_CLOSED, f"account {account.id} is closed")
        refusal = _check_limits(debit, credit, amount)
        if refusal is not None:
            return refusal
        return TransferReversed(c.id, debit.id, credit.id, amount, original.currency, c.code, c.metadata, original.id)

    def _decide_post(self, c: PostTransfer, now: datetime) -> Event | Existing | Refused:
        if c.amount is not None and c.amount <= 0:
            return _not_positive(c.amount)
        transfer = self.transfers.get(c.id)
        if transfer is None:
            return _transfer_not_found(c.id)
        amount = transfer.amount if c.amount is None else c.amount
        if transfer.status == TransferStatus.POSTED:
            if amount == transfer.posted_amount:
                return Existing(transfer)
            return Refused(
                Code.TRANSFER_ALREADY_POSTED,
                f"transfer {c.id} was already posted with amount {transfer.posted_amount}",
            )
        refusal = _undecidable(transfer, now)
        if refusal is not None:
            return refusal
        scaled = _scaled(amount, self.accounts[transfer.debit_account_id].scale)
        if isinstance(scaled, Refused):
            return scaled
        if scaled > transfer.amount:
            return Refused(
                Code.POST_AMOUNT_EXCEEDS_PENDING,
                f"cannot post {scaled}: transfer {c.id} holds only {transfer.amount}",
            )
        return _decided(PendingPosted, transfer, scaled)

    def _decide_void(self, c: VoidTransfer, now: datetime) -> Event | Existing | Refused:
        transfer = self.transfers.get(c.id)
        if transfer is None:
            return _transfer_not_found(c.id)
        if transfer.status == TransferStatus.VOIDED:
            return Existing(transfer)
        refusal = _undecidable(transfer, now)
        if refusal is not None:
            return refusal
        return _decided(PendingVoided, transfer, transfer.amount)

    def _decide_expire(self, c: ExpireTransfer, now: datetime) -> Event | Existing | Refused:
        transfer = self.transfers.get(c.id)
        if transfer is None:
            return _transfer_not_found(c.id)
        due = transfer.expires_at is not None and now >= transfer.expires_at
        if transfer.status != TransferStatus.PENDING or not due:
            return Existing(transfer)
        return _decided(PendingExpired, transfer, transfer.amount)

    # -- applying ---------------------------------------------------------

    def apply(self, record: RecordedEvent) -> tuple[Entry, ...]:
        """Apply an accepted event at the head of the log; return its entries.

        Raises ``ValueError`` if ``record`` is not the next event in order, so
        a fold over a log with a gap fails instead of giving wrong balances.
        """
        if record.seq != self.last_seq + 1:
            raise ValueError(f"event {record.seq} does not follow event {self.last_seq}")
        self.last_seq = record.seq
        event = record.event
        match event:
            case AccountCreated():
                self._keep_account(event.account_id)
                self.accounts[event.account_id] = Account(
                    id=event.account_id,
                    currency=event.currency,
                    scale=event.scale,
                    flags=event.flags,
                    metadata=event.metadata,
                    created_at=record.recorded_at,
                )
                return ()
            case AccountClosed():
                self._keep_account(event.account_id)
                self.accounts[event.account_id].closed = True
                return ()
            case TransferPosted() | TransferPending() | TransferReversed():
                pending = isinstance(event, TransferPending)
                timeout_seconds = event.timeout_seconds if isinstance(event, TransferPending) else None
                debit, credit = self._move(event, held=money.ZERO)
                reverses = event.reverses if isinstance(event, TransferReversed) else None
                if reverses is not None:
                    self._add_reversed(reverses, event.amount)
                self._keep_transfer(event.transfer_id)
                self.transfers[event.transfer_id] = Transfer(
                    id=event.transfer_id,
                    debit_account_id=event.debit_account_id,
                    credit_account_id=event.credit_account_id,
                    amount=event.amount,
                    currency=event.currency,
                    code=event.code,
                    metadata=event.metadata,
                    pending=pending,
                    timeout_seconds=timeout_seconds,
                    status=TransferStatus.PENDING if pending else TransferStatus.POSTED,
                    seq=record.seq,
                    created_at=record.recorded_at,
                    expires_at=_deadline(record.recorded_at, timeout_seconds),
                    posted_amount=None if pending else event.amount,
                    reverses=reverses,
                )
            case PendingDecided():
                transfer = self.transfers[event.transfer_id]
                posted = event.amount if event.posts else None
                debit, credit = self._move(event, held=transfer.amount)
                self._keep_transfer(event.transfer_id)
                self.transfers[event.transfer_id] = msgspec.structs.replace(
                    transfer,
                    status=event.status,
                    posted_amount=posted,
                    decided_seq=record.seq,
                )
        # Two per transfer appended: built positionally, without a loop.
        seq, at = record.seq, record.recorded_at
        transfer_id, type_, amount = event.transfer_id, event.type, event.amount
        return (
            Entry(event.debit_account_id, seq, transfer_id, type_, "debit", amount, debit.copy(), at),
            Entry(event.credit_account_id, seq, transfer_id, type_, "credit", amount, credit.copy(), at),
        )

    def _move(
        self,
        event: TransferPosted | TransferPending | TransferReversed | PendingDecided,
        *,
        held: Decimal,
    ) -> tuple[Balance, Balance]:
        """Move both sides of a transfer alike, as its event's class says
        (:mod:`ledger.domain.events`): its debit account's debits and its
        credit account's credits, pending by the event's amount if it
        ``holds`` and by ``-held`` (what the transfer held) if it
        ``releases``, posted by the event's amount if it ``posts``. Return
        the two balances (debit, credit) as they now are."""
        if self._undo is not None:
            self._keep_account(event.debit_account_id)
            self._keep_account(event.credit_account_id)
        debit = self.accounts[event.debit_account_id].balance
        credit = self.accounts[event.credit_account_id].balance
        if event.holds:
            debit.debits_pending = money.add(debit.debits_pending, event.amount)
            credit.credits_pending = money.add(credit.credits_pending, event.amount)
        if event.releases:
            debit.debits_pending = money.sub(debit.debits_pending, held)
            credit.credits_pending = money.sub(credit.credits_pending, held)
        if event.posts:
            debit.debits_posted = money.add(debit.debits_posted, event.amount)
            credit.credits_posted = money.add(credit.credits_posted, event.amount)
        return debit, credit

    def _add_reversed(self, original_id: UUID, amount: Decimal) -> None:
        """Add ``amount`` to what of the transfer ``original_id`` is reversed.
        Deciding holds the original; a long fold may have forgotten it,
        settled, and then the projection adds the amount to what is stored."""
        original = self.transfers.get(original_id)
        if original is not None:
            self._keep_transfer(original_id)
            self.transfers[original_id] = msgspec.structs.replace(
                original, reversed_amount=money.add(original.reversed_amount, amount)
            )

    def forget_settled_transfers(self) -> None:
        """Drop every transfer that is no longer pending.

        A fold of the log needs a transfer only until it is decided (its
        pending amount is released then), so a long replay that calls this now
        and then holds the accounts and the open holds, not every transfer.
        """
        self.transfers = {i: t for i, t in self.transfers.items() if t.status == TransferStatus.PENDING}

    def _subject(self, event: Event) -> Account | Transfer:
        if isinstance(event, (AccountCreated, AccountClosed)):
            return self.accounts[event.account_id]
        return self.transfers[event.transfer_id]

    # -- atomic groups ----------------------------------------------------

    def _keep_account(self, account_id: UUID) -> None:
        if self._undo is not None and account_id not in self._undo.accounts:
            account = self.accounts.get(account_id)
            self._undo.accounts[account_id] = None if account is None else _account_copy(account)

    def _keep_transfer(self, transfer_id: UUID) -> None:
        if self._undo is not None and transfer_id not in self._undo.transfers:
            self._undo.transfers[transfer_id] = self.transfers.get(transfer_id)

    def _roll_back(self, undo: _Undo) -> None:
        self.last_seq = undo.last_seq
        _restore(self.accounts, undo.accounts)
        _restore(self.transfers, undo.transfers)
        undo.accounts.clear()
        undo.transfers.clear()


_Decision = TypeVar("_Decision", PendingPosted, PendingVoided, PendingExpired)
_Held = TypeVar("_Held", Account, Transfer)


@dataclass(slots=True)
class _Undo:
    last_seq: int
    accounts: dict[UUID, Account | None] = dataclasses.field(default_factory=dict)
    transfers: dict[UUID, Transfer | None] = dataclasses.field(default_factory=dict)


def _restore(table: dict[UUID, _Held], saved: dict[UUID, _Held | None]) -> None:
    """Put back in ``table`` what ``saved`` kept of it (``None``: it was absent)."""
    for id_, before in saved.items():
        if before is None:
            table.pop(id_, None)
        else:
            table[id_] = before


def _deadline(recorded_at: datetime, timeout_seconds: int | None) -> datetime | None:
    return None if timeout_seconds is None else recorded_at + timedelta(seconds=timeout_seconds)


def _undecidable(transfer: Transfer, now: datetime) -> Refused | None:
    """Why a transfer can no longer be posted or voided, if it cannot: it was
    decided already, or its deadline has passed (even before the service has
    recorded its expiry)."""
    if transfer.status == TransferStatus.POSTED:
        return Refused(Code.TRANSFER_ALREADY_POSTED, f"transfer {transfer.id} was already posted")
    if transfer.status == TransferStatus.VOIDED:
        return Refused(Code.TRANSFER_ALREADY_VOIDED, f"transfer {transfer.id} was already voided")
    if transfer.status == TransferStatus.EXPIRED:
        return Refused(Code.TRANSFER_EXPIRED, f"transfer {transfer.id} has expired")
    if transfer.expires_at is not None and now >= transfer.expires_at:
        return Refused(Code.TRANSFER_EXPIRED, f"transfer {transfer.id} expired at its deadline")
    return None


def _decided(kind: type[_Decision], transfer: Transfer, amount: Decimal) -> _Decision:
    return kind(
        transfer_id=transfer.id,
        debit_account_id=transfer.debit_account_id,
        credit_account_id=transfer.credit_account_id,
        amount=amount,
        currency=transfer.currency,
    )


def _not_positive(amount: Decimal) -> Refused:
    return Refused(Code.AMOUNT_MUST_BE_POSITIVE, f"amount must be positive, got {amount}")


def _transfer_not_found(transfer_id: UUID) -> Refused:
    return Refused(Code.TRANSFER_NOT_FOUND, f"transfer {transfer_id} does not exist")


def _scaled(amount: Decimal, scale: int) -> Decimal | Refused:
    """``amount`` as stored, with exactly its accounts' ``scale`` fractional
    digits; refused if it needs more."""
    try:
        return money.at_scale(amount, scale)
    except decimal.Inexact:
        return Refused(
            Code.AMOUNT_SCALE_EXCEEDED,
            f"amount {amount} has more than the accounts' {scale} fractional digits",
        )


def _check_limits(debit: Account, credit: Account, amount: Decimal) -> Refused | None:
    """The account flags, checked as the balances would be after ``amount``
    is added (posted or pending: both count)."""
    d = debit.balance
    if debit.flags.debits_must_not_exceed_credits:
        debits = money.add(money.add(d.debits_posted, d.debits_pending), amount)
        if debits > d.credits_posted:
            return Refused(
                Code.EXCEEDS_CREDITS,
                f"account {debit.id} would have debits of {debits} against credits of {d.credits_posted}",
            )
    c = credit.balance
    if credit.flags.credits_must_not_exceed_debits:
        credits = money.add(money.add(c.credits_posted, c.credits_pending), amount)
        if credits > c.debits_posted:
            return Refused(
                Code.EXCEEDS_DEBITS,
                f"account {credit.id} would have credits of {credits} against debits of {c.debits_posted}",
            )
    return None


def _differing(stored: object, given: object, *fields: str) -> list[str]:
    """The ``fields`` whose values differ between what is stored and what a
    command repeating it gives."""
    return [name for name in fields if not _same(getattr(stored, name), getattr(given, name))]


def _same(stored: object, given: object) -> bool:
    """Whether a stored value and a repeated command's are the same value,
    told apart as JSON tells them: ``true`` is not ``1`` and ``false`` is not
    ``0``, at any depth of metadata, though Python's ``==`` says they are."""
    if isinstance(stored, bool) or isinstance(given, bool):
        return type(stored) is type(given) and stored == given
    if isinstance(stored, dict) and isinstance(given, dict):
        return stored.keys() == given.keys() and all(_same(value, given[key]) for key, value in stored.items())
    if isinstance(stored, list) and isinstance(given, list):
        return len(stored) == len(given) and all(map(_same, stored, given))
    return stored == given


def _exists_with_different_fields(kind: str, id_: UUID, fields: list[str]) -> Refused:
    return Refused(
        Code.EXISTS_WITH_DIFFERENT_FIELDS,
        f"{kind} {id_} already exists with a different {', '.join(fields)}",
    )
