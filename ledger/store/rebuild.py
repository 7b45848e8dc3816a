"""Rebuilding every projection from the log.

In one SERIALIZABLE transaction that takes the append lock first: empty the
projections, fold the log through a cursor, and write what each chunk of
events changed with the same
:meth:`~ledger.store.projections.Projection.copy` steps that large appends
use, so the result is what the appends would have written. Only the last
step, setting the balances the entries moved, is taken once, after the last
chunk (:func:`~ledger.store.projections.set_balances`): in one transaction,
each update of a row leaves a version of it that every later update walks
past, so a balance set per chunk would cost the rebuild time growing with
the square of the chunks. A broken hash chain
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

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from ..domain.events import RecordedEvent
from ..domain.ledger import Entry, Ledger
from ..domain.merkle import Frontier, Node
from .head import LOCK, NEW_EPOCH, read_head
from .projections import Projection, projection, set_balances
from .replay import LOG, Replay
from .tree import Growth, write_subtrees

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


async def rebuild_projections(conn: asyncpg.Connection, *, chunk: int = 5000) -> Rebuilt:
    """Replace accounts, balances, transfers and entries by the fold of the log.

    Raises :class:`~ledger.store.replay.ChainBroken` (nothing is changed) if
    the log's hash chain is broken.
    """
    async with conn.transaction(isolation="serializable"):
        await conn.execute(LOCK)
        return await rebuild_locked(conn, chunk=chunk)


async def rebuild_locked(
    conn: asyncpg.Connection, *, tree: Frontier | None = None, imported_after: int | None = None, chunk: int = 5000
) -> Rebuilt:
    """:func:`rebuild_projections` in the transaction ``conn`` is in, which
    must hold :data:`~ledger.store.head.LOCK` (as an import's does); and,
    given the stored ``tree`` (if it is behind the log, as an import's is),
    grow it by the events it lacks from the bytes the chain is checked on.
    The events after ``imported_after``, if given, were imported: see
    :attr:`~ledger.store.replay.Replay.imported_after`.

    The log is read ``chunk`` events at a time, and each chunk is folded
    while what the one before it changed is being written: the database
    takes in one chunk while Python folds the next (:func:`_folded` lets
    the write go on)."""
    growth = None if tree is None else Growth(tree)
    replay = Replay(Ledger(), growth, imported_after=imported_after)
    events = 0
    await conn.execute(_EMPTY)
    await conn.execute(NEW_EPOCH)
    indexes = await conn.fetch(_SECONDARY_INDEXES, list(_TABLES))
    for index in indexes:
        await conn.execute(f"DROP INDEX {index['name']}")
    head = await read_head(conn)
    cursor = await conn.cursor(LOG)
    moved: dict[UUID, Entry] = {}  # the last entry on each account
    writing: asyncio.Task[None] | None = None
    try:
        rows = await cursor.fetch(chunk)
        while rows:
            applied = await _folded(replay, rows)
            events += len(applied)
            if writing is not None:
                await writing
            rows = await cursor.fetch(chunk)
            change = projection(replay.ledger, applied)
            moved.update((e.account_id, e) for e in change.entries)
            nodes = [] if growth is None else growth.grown()
            writing = asyncio.create_task(_write(conn, change, nodes))
            replay.ledger.forget_settled_transfers()
        replay.finish(head)
        if writing is not None:
            await writing
        await set_balances(conn, moved.values())
    except BaseException:
        if writing is not None:
            # The connection takes no other statement until the write in flight ends.
            with contextlib.suppress(BaseException):
                await writing
        raise
    await conn.execute(_INDEX_MEMORY)
    for index in indexes:
        await conn.execute(index["definition"])
    return Rebuilt(events=events, accounts=len(replay.ledger.accounts))


#: Rows folded between two turns of the event loop, in which a write in
#: flight sends what it has made and starts its next statement.
_TURN = 64


async def _folded(replay: Replay, rows: list[asyncpg.Record]) -> list[tuple[RecordedEvent, tuple[Entry, ...]]]:
    """``rows`` applied by ``replay``, giving the event loop a turn every
    :data:`_TURN` rows."""
    applied: list[tuple[RecordedEvent, tuple[Entry, ...]]] = []
    for start in range(0, len(rows), _TURN):
        applied.extend(map(replay.apply, rows[start : start + _TURN]))
        await asyncio.sleep(0)
    return applied


async def _write(conn: asyncpg.Connection, change: Projection, nodes: Sequence[Node]) -> None:
    """Write ``change`` but for the balances it moved, and the subtrees ``nodes``."""
    await change.copy_rows(conn)
    await write_subtrees(conn, nodes)
