"""Reconciliation: prove that the stored balances are what the log says.

In one snapshot, the log is replayed as PostgreSQL's sums of its movements
per account (:mod:`ledger.store.movements`: from the events alone, memory
growing with the accounts, not with the events), its hash chain is verified
event by event (for a long log, in a process per core while the sums run:
:mod:`ledger.store.chain_ranges`), and both are compared with the stored
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

import asyncpg

from ..domain import money
from ..domain.model import Balance
from .chain_ranges import ChainWorkers, export_snapshot
from .connection import Conn
from .head import LOCK, NEW_EPOCH, LogHead, read_head
from .movements import Movements, sum_movements
from .replay import ChainCheck
from .tables import BALANCE_TOTALS, BALANCES

#: Told how far the chain's check is: (events checked, the head).
Progress = Callable[[int, int], None]

_STORED = BALANCES.select(only=("account_id", *BALANCE_TOTALS))
#: Transfers whose stored reversed_amount is not zero, and those named.
_REVERSED = "SELECT id, reversed_amount FROM transfers WHERE reversed_amount <> 0 OR id = ANY($1::uuid[])"
#: The first event stored after the head (the ranges of the chain end there).
_PAST_HEAD = "SELECT min(seq) FROM events WHERE seq > $1"
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
    #: The first event the replay cannot apply, named, and why (None: each can).
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

    A log whose chain is broken, or that holds an event that cannot be
    applied, is reported but never used to repair: its replay is evidence
    of tampering or of a fault, not a source of truth. With ``chain``, a log
    long enough has its hash chain checked in those processes while this
    connection sums the movements; ``progress(events, head)`` is told how
    far the check is.
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
        report.chain, movements = await _replay(conn, head, chain, progress)
        report.events_scanned = report.chain.checked
        report.replay_error = _replay_error(report.chain, movements)
        if isinstance(movements, Movements):
            report.totals = _totals(movements)
            repairs = await _compare(conn, movements.balances, report, prefetch)
            await _compare_reversed(conn, movements.reversed, report)
            if repair and repairs and report.chain.ok and report.replay_error is None:
                await conn.execute(NEW_EPOCH)
                rows = [(i, *(getattr(b, f) for f in BALANCE_TOTALS)) for i, b in repairs.items()]
                await conn.execute(_REPAIR, *map(list, zip(*rows)))  # one array per column
                report.repaired = len(repairs)
    report.duration_ms = round((time.monotonic() - started) * 1000)
    return report


async def _replay(
    conn: Conn, head: LogHead, workers: ChainWorkers | None, progress: Progress | None
) -> tuple[ChainCheck, Movements | str]:
    """The chain checked up to ``head``, and the log's movements summed (or
    why they cannot be: an event's data is not what its type says)."""

    def every(checked: int) -> None:
        if progress is not None:
            progress(checked, head.seq)

    if workers is not None and workers.wanted(head.seq):
        checking = asyncio.create_task(workers.check(await export_snapshot(conn), head.seq, every=every))
        try:
            movements = await _sum(conn, head.seq)
        finally:
            chain = await checking
        chain.stored_past(await conn.fetchval(_PAST_HEAD, head.seq))
    else:
        chain = ChainCheck()
        await chain.read(conn, every=every)
        movements = await _sum(conn, head.seq)
    every(chain.checked)
    if chain.ok:
        chain.finish(head)
    return chain, movements


async def _sum(conn: Conn, head: int) -> Movements | str:
    try:
        async with conn.transaction():  # a savepoint: the snapshot stays usable
            return await sum_movements(conn, head)
    except asyncpg.DataError as error:
        return f"the log holds an event that cannot be read: {error}"


def _replay_error(chain: ChainCheck, movements: Movements | str) -> str | None:
    """The first event that :meth:`Ledger.apply` could not be given
    (``chain.unreadable``) or could not apply (``movements.unapplicable``),
    named; else why the log could not be summed, if it could not."""
    found = [chain.unreadable, movements if isinstance(movements, str) else movements.unapplicable]
    first = min((f for f in found if isinstance(f, tuple)), default=None)
    if first is not None:
        return f"event {first[0]} cannot be applied: {first[1]}"
    return movements if isinstance(movements, str) else None


async def _compare(conn: Conn, replayed: dict[UUID, Balance], report: Report, prefetch: int) -> dict[UUID, Balance]:
    """Add a mismatch for every stored balance that differs from the
    ``replayed`` one; return the replayed balances of the accounts whose
    stored ones differ."""
    repairs: dict[UUID, Balance] = {}
    unseen = set(replayed)
    async for row in conn.cursor(_STORED, prefetch=prefetch):
        account_id = row["account_id"]
        report.accounts_checked += 1
        balance = replayed.get(account_id)
        if balance is None:
            report.mismatches.append(Mismatch(account_id, "account", "present", None))
            continue
        unseen.discard(account_id)
        for name in BALANCE_TOTALS:
            stored, replayed_total = row[name], getattr(balance, name)
            if stored != replayed_total:
                report.mismatches.append(Mismatch(account_id, name, format(stored, "f"), format(replayed_total, "f")))
                repairs[account_id] = balance
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


def _totals(movements: Movements) -> list[CurrencyTotals]:
    """Per currency, the sums of the replayed balances of the accounts the
    log opens in it."""
    sums: dict[str, list[Decimal]] = {}
    for account_id, currency in movements.currencies.items():
        total = sums.setdefault(currency, [money.ZERO] * 4)
        balance = movements.balances[account_id]
        for i, name in enumerate(BALANCE_TOTALS):
            total[i] = money.add(total[i], getattr(balance, name))
    return [CurrencyTotals(currency, *sums[currency]) for currency in sorted(sums)]
