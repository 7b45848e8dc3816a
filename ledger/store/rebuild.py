"""Rebuilding every projection from the log.

In one SERIALIZABLE transaction that takes the append lock first: empty the
projections, fold the log through a cursor, and write what each chunk of
events changed with the same
:meth:`~ledger.store.projections.Projection.copy` that large appends use, so
the result is what the appends would have written. A broken hash chain
aborts the rebuild (and so changes nothing): a tampered log is no source to
rebuild from.

The projections' secondary indexes (those that back no constraint) are
dropped once the tables are empty and made again, as the database defined
them, after the last row is in: one sorted build of each instead of an
insert into it per row, the textbook bulk load. The rebuild's TRUNCATE
already holds every projection's table exclusively until it commits, so no
reader notices; the indexes that back a key stay, and check every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ..domain.events import RecordedEvent
from ..domain.ledger import Entry, Ledger
from ..domain.merkle import Frontier
from .head import LOCK, NEW_EPOCH
from .projections import projection
from .replay import replayed
from .tree import Growth

_TABLES = ("entries", "transfers", "balances", "accounts")
_EMPTY = f"TRUNCATE {', '.join(_TABLES)}"
#: The indexes of ``$1`` (tables) that back no constraint, and how to make each again.
_SECONDARY_INDEXES = """
    SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
    FROM pg_index AS i
    WHERE i.indrelid = ANY($1::regclass[])
      AND NOT EXISTS (SELECT FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
    ORDER BY 1
"""
#: Memory for each index build (sorted in memory rather than on disk).
_INDEX_MEMORY = "SET LOCAL maintenance_work_mem = '256MB'"


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


async def rebuild_locked(
    conn: asyncpg.Connection, *, tree: Frontier | None = None, chunk: int = 5000, prefetch: int = 1000
) -> Rebuilt:
    """:func:`rebuild_projections` in the transaction ``conn`` is in, which
    must hold :data:`~ledger.store.head.LOCK` (as an import's does); and,
    given the stored ``tree`` (if it is behind the log, as an import's is),
    grow it by the events it lacks from the bytes the chain is checked on."""
    growth = None if tree is None else Growth(tree)
    ledger = Ledger()
    applied: list[tuple[RecordedEvent, tuple[Entry, ...]]] = []
    events = 0
    await conn.execute(_EMPTY)
    await conn.execute(NEW_EPOCH)
    indexes = await conn.fetch(_SECONDARY_INDEXES, list(_TABLES))
    for index in indexes:
        await conn.execute(f"DROP INDEX {index['name']}")
    async for item in replayed(conn, ledger, growth=growth, prefetch=prefetch):
        applied.append(item)
        events += 1
        if len(applied) == chunk:
            await _write(conn, ledger, applied, growth)
            applied.clear()
            ledger.forget_settled_transfers()
    await _write(conn, ledger, applied, growth)
    await conn.execute(_INDEX_MEMORY)
    for index in indexes:
        await conn.execute(index["definition"])
    return Rebuilt(events=events, accounts=len(ledger.accounts))


async def _write(
    conn: asyncpg.Connection,
    ledger: Ledger,
    applied: list[tuple[RecordedEvent, tuple[Entry, ...]]],
    growth: Growth | None,
) -> None:
    """Write what the chunk ``applied`` changed (if anything), and the
    subtrees its events complete."""
    if applied:
        await projection(ledger, applied).copy(conn, after=applied[0][0].seq - 1)
    if growth is not None:
        await growth.write(conn)
