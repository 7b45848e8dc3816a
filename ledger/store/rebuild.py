"""Rebuilding every projection from the log.

In one SERIALIZABLE transaction that takes the append lock first: empty the
projections, fold the log through a cursor, and write what each chunk of
events changed with the same
:meth:`~ledger.store.projections.Projection.copy` that large appends use, so
the result is what the appends would have written. A broken hash chain
aborts the rebuild (and so changes nothing): a tampered log is no source to
rebuild from.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ..domain.events import RecordedEvent
from ..domain.ledger import Entry, Ledger
from .head import LOCK, NEW_EPOCH
from .projections import projection
from .replay import replayed

_EMPTY = "TRUNCATE entries, transfers, balances, accounts"


@dataclass(frozen=True, slots=True)
class Rebuilt:
    events: int
    accounts: int


async def rebuild_projections(conn: asyncpg.Connection, *, chunk: int = 5000, prefetch: int = 1000) -> Rebuilt:
    """Replace accounts, balances, transfers and entries by the fold of the log.

    Raises :class:`~ledger.store.replay.ChainBroken` (nothing is changed) if
    the log's hash chain is broken.
    """
    async with conn.transaction(isolation="serializable"):
        await conn.execute(LOCK)
        return await rebuild_locked(conn, chunk=chunk, prefetch=prefetch)


async def rebuild_locked(conn: asyncpg.Connection, *, chunk: int = 5000, prefetch: int = 1000) -> Rebuilt:
    """:func:`rebuild_projections` in the transaction ``conn`` is in, which
    must hold :data:`~ledger.store.head.LOCK` (as an import's does)."""
    ledger = Ledger()
    applied: list[tuple[RecordedEvent, tuple[Entry, ...]]] = []
    events = 0
    await conn.execute(_EMPTY)
    await conn.execute(NEW_EPOCH)
    async for item in replayed(conn, ledger, prefetch=prefetch):
        applied.append(item)
        events += 1
        if len(applied) == chunk:
            await _write(conn, ledger, applied)
            applied.clear()
            ledger.forget_settled_transfers()
    await _write(conn, ledger, applied)
    return Rebuilt(events=events, accounts=len(ledger.accounts))


async def _write(
    conn: asyncpg.Connection, ledger: Ledger, applied: list[tuple[RecordedEvent, tuple[Entry, ...]]]
) -> None:
    """Write what the chunk ``applied`` changed (if anything)."""
    if applied:
        await projection(ledger, applied).copy(conn, after=applied[0][0].seq - 1)
