"""Reconciliation: prove that the stored balances are what the log says.

One pass over the log through a server-side cursor, in one snapshot,
recomputes every balance (memory grows with the accounts and the open holds,
not with the events), verifies the hash chain, and compares with the stored
balances read in the same snapshot. With ``repair``, it runs instead in a
SERIALIZABLE transaction that takes the append lock first, so nothing is
appended between the replay and the rewrite of the balances that differ. The
log itself is never written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

import msgspec

from ..domain import money
from ..domain.events import TransferReversed
from ..domain.ledger import Ledger
from ..domain.model import Balance
from .chain_ranges import ChainWorkers, export_snapshot
from .connection import Conn
from .head import LOCK, NEW_EPOCH, read_head
from .replay import FORGET_EVERY, ChainCheck, stored_events
from .tables import BALANCE_TOTALS, BALANCES

#: Told how far the replay is: (events folded, the head).
Progress = Callable[[int, int], None]
#: Events folded between two calls of a :data:`Progress`.
PROGRESS_EVERY = 10_000

_STORED = BALANCES.select(only=("account_id", *BALANCE_TOTALS))
#: Transfers whose stored reversed_amount is not zero, and those named.
_REVERSED = "SELECT id, reversed_amount FROM transfers WHERE reversed_amount <> 0 OR id = ANY($1::uuid[])"
_REPAIR = f"""
    UPDATE balances AS b SET {", ".join(f"{c} = u.{c}" for c in BALANCE_TOTALS)}
    FROM unnest($1::uuid[], {", ".join(f"${n}::numeric[]" for n in range(2, 2 + len(BALANCE_TOTALS)))})
        AS u(account_id, {", ".join(BALANCE_TOTALS)})
    WHERE b.account_id = u.account_id
"""


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A stored ``field`` that differs from the replay, both as decimal text:
    of an account's balance (``field`` is ``"account"`` when the account
    exists on one side only, ``None`` on the other), or of a transfer's
    ``reversed_amount`` (``account_id`` is None, ``transfer_id`` names it)."""

    account_id: UUID | None
    field: str
    stored: str | None
    replayed: str | None
    transfer_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    currency: str
    debits_posted: Decimal
    credits_posted: Decimal
    debits_pending: Decimal
    credits_pending: Decimal

    @property
    def balanced(self) -> bool:
        """Double entry: posted debits equal posted credits (and pending alike)."""
        return self.debits_posted == self.credits_posted and self.debits_pending == self.credits_pending


@dataclass(slots=True)
class Report:
    head_seq: int = 0
    events_scanned: int = 0
    accounts_checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    totals: list[CurrencyTotals] = field(default_factory=list)
    chain: ChainCheck = field(default_factory=ChainCheck)
    #: Why the replay stopped early (an event that cannot be applied), if it did.
    replay_error: str | None = None
    repaired: int = 0
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.chain.ok and self.replay_error is None and not self.mismatches and all(t.balanced for t in self.totals)
        )


async def reconcile(
    conn: Conn,
    *,
    repair: bool = False,
    prefetch: int = 1000,
    chain: ChainWorkers | None = None,
    progress: Progress | None = None,
) -> Report:
    """Replay, compare, and with ``repair`` rewrite the balances that differ.

    A log whose chain is broken is reported but never used to repair: its
    replay is evidence of tampering, not a source of truth. With ``chain``,
    a log long enough has its hash chain checked in those processes while
    this one folds the balances; ``progress(events, head)`` is told how far
    the fold is, every :data:`PROGRESS_EVERY` events.
    """
    started = time.monotonic()
    report = Report()
    if repair:
        transaction = conn.transaction(isolation="serializable")
    else:
        transaction = conn.transaction(isolation="repeatable_read", readonly=True)
    async with transaction:
        if repair:
            await conn.execute(LOCK)
        head = await read_head(conn)
        report.head_seq = head.seq
        if chain is not None and chain.wanted(head.seq):
            checking = asyncio.create_task(chain.check(await export_snapshot(conn), head.seq))
            try:
                ledger, reversed_ = await _replay(conn, report, prefetch, None, progress)
            finally:
                report.chain = await checking
        else:
            ledger, reversed_ = await _replay(conn, report, prefetch, report.chain, progress)
        if report.chain.ok:
            report.chain.finish(head)
        report.totals = _totals(ledger)
        repairs = await _compare(conn, ledger, report, prefetch)
        await _compare_reversed(conn, reversed_, report)
        if repair and repairs and report.chain.ok and report.replay_error is None:
            await conn.execute(NEW_EPOCH)
            rows = [(i, *(getattr(b, f) for f in BALANCE_TOTALS)) for i, b in repairs.items()]
            await conn.execute(_REPAIR, *map(list, zip(*rows)))  # one array per column
            report.repaired = len(repairs)
    report.duration_ms = round((time.monotonic() - started) * 1000)
    return report


async def _replay(
    conn: Conn, report: Report, prefetch: int, chain: ChainCheck | None, progress: Progress | None
) -> tuple[Ledger, dict[UUID, Decimal]]:
    """Fold the log as stored, noting where its chain breaks (unless checked
    elsewhere: ``chain`` None); the ledger, and what the log's reversals
    reversed of each transfer they name."""
    ledger = Ledger()
    reversed_: dict[UUID, Decimal] = {}
    async for record in stored_events(conn, chain, prefetch=prefetch):
        report.events_scanned += 1
        event = record.event
        if isinstance(event, TransferReversed):
            reversed_[event.reverses] = money.add(reversed_.get(event.reverses, money.ZERO), event.amount)
        # Past a deleted event, go on folding what is there: the accounts it
        # moved then show up as mismatches, naming what the deletion changed.
        try:
            ledger.apply_past_gap(record)
        except (KeyError, ValueError, msgspec.ValidationError) as error:
            report.replay_error = f"event {record.seq} cannot be applied: {error!r}"
            break
        if report.events_scanned % FORGET_EVERY == 0:
            ledger.forget_settled_transfers()
        if progress is not None and report.events_scanned % PROGRESS_EVERY == 0:
            progress(report.events_scanned, report.head_seq)
    if progress is not None:
        progress(report.events_scanned, report.head_seq)
    return ledger, reversed_


async def _compare(conn: Conn, ledger: Ledger, report: Report, prefetch: int) -> dict[UUID, Balance]:
    """Add a mismatch for every stored balance that differs from ``ledger``;
    return the replayed balances of the accounts whose stored ones differ."""
    repairs: dict[UUID, Balance] = {}
    unseen = set(ledger.accounts)
    async for row in conn.cursor(_STORED, prefetch=prefetch):
        account_id = row["account_id"]
        report.accounts_checked += 1
        account = ledger.accounts.get(account_id)
        if account is None:
            report.mismatches.append(Mismatch(account_id, "account", "present", None))
            continue
        unseen.discard(account_id)
        for name in BALANCE_TOTALS:
            stored, replayed = row[name], getattr(account.balance, name)
            if stored != replayed:
                report.mismatches.append(Mismatch(account_id, name, format(stored, "f"), format(replayed, "f")))
                repairs[account_id] = account.balance
    for account_id in sorted(unseen):
        report.mismatches.append(Mismatch(account_id, "account", None, "present"))
    return repairs


async def _compare_reversed(conn: Conn, reversed_: dict[UUID, Decimal], report: Report) -> None:
    """Add a mismatch for every transfer whose stored ``reversed_amount``
    differs from the sum of its reversals in the log."""
    for row in await conn.fetch(_REVERSED, list(reversed_)):
        stored, replayed = row["reversed_amount"], reversed_.get(row["id"], money.ZERO)
        if stored != replayed:
            mismatch = Mismatch(None, "reversed_amount", format(stored, "f"), format(replayed, "f"), row["id"])
            report.mismatches.append(mismatch)


def _totals(ledger: Ledger) -> list[CurrencyTotals]:
    sums: dict[str, list[Decimal]] = {}
    for account in ledger.accounts.values():
        total = sums.setdefault(account.currency, [money.ZERO] * 4)
        for i, name in enumerate(BALANCE_TOTALS):
            total[i] = money.add(total[i], getattr(account.balance, name))
    return [CurrencyTotals(currency, *sums[currency]) for currency in sorted(sums)]
