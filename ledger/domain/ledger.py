"""The decision of each command against the current balances.

:class:`Ledger` is an in-memory view of the accounts and transfers a batch
touches (or, when replaying, of the whole log). :meth:`Ledger.execute` decides
one command: it either refuses it with a :class:`Code`, recognises it as a
replay of what is already recorded, or records a new event and applies it.
:meth:`Ledger.apply` is the only place state changes, so deciding live and
folding the stored log can never disagree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from . import money
from .codes import Code
from .commands import Command, MakeTransfer, OpenAccount, account_ids, transfer_ids
from .events import AccountCreated, Event, RecordedEvent, TransferPosted
from .model import Account, Balance, Transfer, TransferStatus


@dataclass(frozen=True, slots=True)
class Entry:
    """One side of a movement on one account, with the balance right after it."""

    account_id: UUID
    seq: int
    transfer_id: UUID
    type: str
    side: str
    amount: Decimal
    balance: Balance
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Recorded:
    """The command was accepted: ``record`` is its new event."""

    record: RecordedEvent
    entries: tuple[Entry, ...]
    #: The account or transfer as the event left it.
    subject: Account | Transfer


@dataclass(frozen=True, slots=True)
class Existing:
    """The command repeats one already recorded with the same fields."""

    subject: Account | Transfer


@dataclass(frozen=True, slots=True)
class Refused:
    code: Code
    message: str


Outcome = Recorded | Existing | Refused


def snapshot(subject: Account | Transfer) -> Account | Transfer:
    """A copy that later events cannot change."""
    if isinstance(subject, Account):
        return dataclasses.replace(subject, balance=subject.balance.copy())
    return subject


class Ledger:
    """Accounts and transfers in memory, and the head of the log they reflect."""

    def __init__(
        self,
        accounts: Iterable[Account] = (),
        transfers: Iterable[Transfer] = (),
        *,
        head: int = 0,
    ) -> None:
        self.accounts: dict[UUID, Account] = {a.id: a for a in accounts}
        self.transfers: dict[UUID, Transfer] = {t.id: t for t in transfers}
        #: The seq of the last event applied; the next one recorded is head + 1.
        self.head = head

    # -- deciding ---------------------------------------------------------

    def execute(self, command: Command, *, now: datetime, metadata: dict[str, Any]) -> Outcome:
        """Decide ``command``; if accepted, record its event at ``head + 1``."""
        decision = self._decide(command)
        if isinstance(decision, (Existing, Refused)):
            return decision
        record = RecordedEvent(seq=self.head + 1, event=decision, recorded_at=now, metadata=metadata)
        entries = self.apply(record)
        return Recorded(record, entries, snapshot(self._subject(decision)))

    def execute_all(
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
            return [self.execute(c, now=now, metadata=metadata) for c in commands]
        saved = self._checkpoint(commands)
        outcomes: list[Outcome] = []
        for index, command in enumerate(commands):
            outcome = self.execute(command, now=now, metadata=metadata)
            if isinstance(outcome, Refused):
                self._restore(saved)
                linked = Refused(
                    Code.LINKED_TRANSFER_FAILED,
                    f"not recorded: item {index} of this atomic batch failed ({outcome.code})",
                )
                return [outcome if i == index else linked for i in range(len(commands))]
            outcomes.append(outcome)
        return outcomes

    def _decide(self, command: Command) -> Event | Existing | Refused:
        if isinstance(command, OpenAccount):
            return self._decide_open_account(command)
        return self._decide_transfer(command)

    def _decide_open_account(self, c: OpenAccount) -> Event | Existing | Refused:
        existing = self.accounts.get(c.id)
        if existing is not None:
            differing = _differing(
                (existing.currency, c.currency, "currency"),
                (existing.scale, c.scale, "scale"),
                (existing.flags, c.flags, "flags"),
                (existing.metadata, c.metadata, "metadata"),
            )
            if differing:
                return _exists_with_different_fields("account", c.id, differing)
            return Existing(snapshot(existing))
        return AccountCreated(c.id, c.currency, c.scale, c.flags, c.metadata)

    def _decide_transfer(self, c: MakeTransfer) -> Event | Existing | Refused:
        if c.amount <= 0:
            return Refused(Code.AMOUNT_MUST_BE_POSITIVE, f"amount must be positive, got {c.amount}")
        if c.debit_account_id == c.credit_account_id:
            return Refused(Code.ACCOUNTS_MUST_BE_DIFFERENT, "debit and credit account are the same")
        existing = self.transfers.get(c.id)
        if existing is not None:
            differing = _differing(
                (existing.debit_account_id, c.debit_account_id, "debit_account_id"),
                (existing.credit_account_id, c.credit_account_id, "credit_account_id"),
                (existing.amount, c.amount, "amount"),
                (existing.currency, c.currency, "currency"),
                (existing.code, c.code, "code"),
                (existing.metadata, c.metadata, "metadata"),
                (existing.pending, c.pending, "pending"),
                (existing.timeout_seconds, c.timeout_seconds, "timeout_seconds"),
            )
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
        if money.fractional_digits(c.amount) > debit.scale:
            return Refused(
                Code.AMOUNT_SCALE_EXCEEDED,
                f"amount {c.amount} has more than the accounts' {debit.scale} fractional digits",
            )
        for account in (debit, credit):
            if account.closed:
                return Refused(Code.ACCOUNT_CLOSED, f"account {account.id} is closed")
        refusal = _check_limits(debit, credit, c.amount)
        if refusal is not None:
            return refusal
        return TransferPosted(
            transfer_id=c.id,
            debit_account_id=c.debit_account_id,
            credit_account_id=c.credit_account_id,
            amount=Decimal(money.format_amount(c.amount, debit.scale)),
            currency=c.currency,
            code=c.code,
            metadata=c.metadata,
        )

    # -- applying ---------------------------------------------------------

    def apply(self, record: RecordedEvent) -> tuple[Entry, ...]:
        """Apply an accepted event at the head of the log; return its entries.

        Raises ``ValueError`` if ``record`` is not the next event in order, so
        a fold over a log with a gap fails instead of giving wrong balances.
        """
        if record.seq != self.head + 1:
            raise ValueError(f"event {record.seq} does not follow head {self.head}")
        self.head = record.seq
        event = record.event
        if isinstance(event, AccountCreated):
            self.accounts[event.account_id] = Account(
                id=event.account_id,
                currency=event.currency,
                scale=event.scale,
                flags=event.flags,
                metadata=event.metadata,
                created_at=record.recorded_at,
            )
            return ()
        debit = self.accounts[event.debit_account_id]
        credit = self.accounts[event.credit_account_id]
        debit.balance.debits_posted = money.add(debit.balance.debits_posted, event.amount)
        credit.balance.credits_posted = money.add(credit.balance.credits_posted, event.amount)
        self.transfers[event.transfer_id] = Transfer(
            id=event.transfer_id,
            debit_account_id=event.debit_account_id,
            credit_account_id=event.credit_account_id,
            amount=event.amount,
            currency=event.currency,
            code=event.code,
            metadata=event.metadata,
            pending=False,
            timeout_seconds=None,
            status=TransferStatus.POSTED,
            seq=record.seq,
            created_at=record.recorded_at,
        )
        return tuple(
            Entry(
                account_id=account.id,
                seq=record.seq,
                transfer_id=event.transfer_id,
                type=event.type,
                side=side,
                amount=event.amount,
                balance=account.balance.copy(),
                recorded_at=record.recorded_at,
            )
            for account, side in ((debit, "debit"), (credit, "credit"))
        )

    def _subject(self, event: Event) -> Account | Transfer:
        if isinstance(event, AccountCreated):
            return self.accounts[event.account_id]
        return self.transfers[event.transfer_id]

    # -- atomic groups ----------------------------------------------------

    def _checkpoint(self, commands: Sequence[Command]) -> _Checkpoint:
        return _Checkpoint(
            head=self.head,
            accounts={i: _copy_account(self.accounts.get(i)) for c in commands for i in account_ids(c)},
            transfers={i: self.transfers.get(i) for c in commands for i in transfer_ids(c)},
        )

    def _restore(self, saved: _Checkpoint) -> None:
        self.head = saved.head
        for account_id, account in saved.accounts.items():
            if account is None:
                self.accounts.pop(account_id, None)
            else:
                self.accounts[account_id] = account
        for transfer_id, transfer in saved.transfers.items():
            if transfer is None:
                self.transfers.pop(transfer_id, None)
            else:
                self.transfers[transfer_id] = transfer


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    head: int
    accounts: dict[UUID, Account | None]
    transfers: dict[UUID, Transfer | None]


def _copy_account(account: Account | None) -> Account | None:
    return None if account is None else dataclasses.replace(account, balance=account.balance.copy())


def _check_limits(debit: Account, credit: Account, amount: Decimal) -> Refused | None:
    """The account flags, checked as the balances would be after ``amount``."""
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


def _differing(*pairs: tuple[object, object, str]) -> list[str]:
    return [name for stored, given, name in pairs if stored != given]


def _exists_with_different_fields(kind: str, id_: UUID, fields: list[str]) -> Refused:
    return Refused(
        Code.EXISTS_WITH_DIFFERENT_FIELDS,
        f"{kind} {id_} already exists with a different {', '.join(fields)}",
    )
