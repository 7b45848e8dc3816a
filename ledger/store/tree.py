"""The Merkle tree of the log as the store keeps it (RFC 9162 section 2.1;
the arithmetic is :mod:`ledger.domain.merkle`'s).

``merkle_subtrees`` holds the hash of every complete subtree of
:data:`STORED_FROM` levels or more: one row per 2^STORED_FROM events and
fewer, where a row per leaf would add two rows to every event an append
writes. A lower subtree is hashed again from its events, at most
2^STORED_FROM − 1 of them, read by seq. Every append adds the subtrees its
events complete in the transaction that adds the events
(:mod:`ledger.store.write_path`), so the tree of ``n`` leaves is always
exactly the log's ``n`` events, and a root or any proof is O(log n) rows
read by primary key, never a scan.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

from ..domain import merkle
from ..domain.merkle import Frontier, Node, Subtrees, frontier_of, leaf_hash, subtrees_read
from .connection import Conn
from .head import LogHead, read_head
from .replay import row_bytes
from .tables import EVENTS, SUBTREES, Placeholders

#: The lowest level of subtree stored; those below are hashed from their events.
STORED_FROM = 4

_OTHERS = [c for c in EVENTS.columns if c != "hash"]
#: The stored subtrees ``($1, $2)`` (level, index), and the events ``$3``
#: by seq, in one round trip: a subtree row has a level, an event row none.
_SUBTREES = f"""
    SELECT m.level, m.index, m.hash, {", ".join(f"NULL::{EVENTS.types[c]} AS {c}" for c in _OTHERS)}
    FROM unnest($1::smallint[], $2::bigint[]) AS k(level, index)
    JOIN merkle_subtrees AS m USING (level, index)
    UNION ALL
    SELECT NULL, NULL, e.hash, {EVENTS.column_list(prefix="e.", only=_OTHERS)}
    FROM events AS e WHERE e.seq = ANY($3::bigint[])
"""

T = TypeVar("T")

_EVENTS_AFTER = EVENTS.select() + " WHERE seq > $1 ORDER BY seq"


def insert_subtrees(p: Placeholders, *, when: str = "TRUE") -> str:
    """An INSERT of the nodes :func:`subtree_arguments` gives, if ``when``."""
    return (
        f"INSERT INTO {SUBTREES.name} ({SUBTREES.column_list()}) "
        f"SELECT * FROM unnest({p.array('smallint', 'levels')}, {p.array('bigint', 'indexes')}, "
        f"{p.array('bytea', 'hashes')}) WHERE {when}"
    )


def subtree_arguments(nodes: Sequence[Node]) -> dict[str, list[int] | list[bytes]]:
    """The arguments of :func:`insert_subtrees`, by name (``nodes`` of
    :data:`STORED_FROM` levels and more)."""
    return {
        "levels": [level for level, _, _ in nodes],
        "indexes": [index for _, index, _ in nodes],
        "hashes": [hash for _, _, hash in nodes],
    }


_insert = Placeholders()
_INSERT = insert_subtrees(_insert)


async def write_subtrees(conn: Conn, nodes: Sequence[Node]) -> None:
    """Store ``nodes`` (in the transaction ``conn`` is in, if any)."""
    if nodes:
        await conn.execute(_INSERT, *_insert.arguments(subtree_arguments(nodes)))


async def read_tip(conn: Conn, known: tuple[LogHead, Frontier] | None = None) -> tuple[LogHead, Frontier]:
    """The head of the log and the frontier of its tree, as ``conn`` sees
    them; ``known``'s frontier, without reading it, when the head is still
    ``known``'s. (Stored subtrees never change, and those of the head's
    tree commit with it: a later snapshot holds them too.)"""
    head = await read_head(conn)
    if known is not None and known[0] == head:
        return known
    frontier = frontier_of(head.seq)
    subtrees = await read_subtrees(conn, frontier)
    return head, Frontier(head.seq, tuple(subtrees(level, index) for level, index in frontier))


async def read_subtrees(conn: Conn, keys: Collection[tuple[int, int]]) -> Subtrees:
    """The hashes of the complete subtrees ``keys`` (level, index): those
    stored, and the events of the lower ones (hashed here), in one query.
    Asking for any other is an error."""
    stored = [(level, index) for level, index in keys if level >= STORED_FROM]
    low = [(level, index) for level, index in keys if level < STORED_FROM]
    seqs = sorted({seq for level, index in low for seq in range((index << level) + 1, ((index + 1) << level) + 1)})
    found: dict[tuple[int, int], bytes] = {}
    leaves: dict[int, bytes] = {}
    for row in await conn.fetch(_SUBTREES, [k[0] for k in stored], [k[1] for k in stored], seqs):
        if row["level"] is None:
            leaves[row["seq"] - 1] = leaf_hash(row_bytes(row))
        else:
            found[row["level"], row["index"]] = row["hash"]
    for level, index in low:
        # A complete subtree is the whole tree of its leaves.
        run = [leaves[i] for i in range(index << level, (index + 1) << level)]
        found[level, index] = Frontier().append(run, from_level=level + 1)[0].root()

    def subtree(level: int, index: int) -> bytes:
        return found[level, index]

    return subtree


async def computed(conn: Conn, compute: Callable[[Subtrees], T]) -> T:
    """``compute(subtrees)`` (a root, a proof: see :mod:`ledger.domain.merkle`)
    on the stored tree, the subtrees it reads read first, in one query. Every
    subtree it reads must be stored: it may read only inside the tree of the
    head as ``conn`` saw it (stored subtrees never change, so any later
    snapshot holds them too)."""
    return compute(await read_subtrees(conn, subtrees_read(compute)))


async def inclusion(conn: Conn, index: int, size: int) -> tuple[bytes, list[bytes]]:
    """Leaf ``index``'s hash and its audit path in the tree of ``size``
    leaves (``index < size <= head``)."""
    return await computed(conn, functools.partial(_inclusion, index, size))


async def consistency(conn: Conn, first: int, second: int) -> list[bytes]:
    """The proof that the tree of ``first`` leaves is a prefix of the tree of
    ``second`` (``0 < first <= second <= head``)."""
    return await computed(conn, functools.partial(merkle.consistency_proof, first, second))


def _inclusion(index: int, size: int, subtrees: Subtrees) -> tuple[bytes, list[bytes]]:
    return subtrees(0, index), merkle.inclusion_proof(index, size, subtrees)


class Growth:
    """The stored tree ``tree`` grown by the events a read of the log gives,
    in seq order, from their canonical bytes (:meth:`add`: those it already
    holds are passed over); the subtrees they complete are stored a chunk
    at a time (:meth:`write`), in the reader's transaction. For what adds
    events other than by appending: an import, the migration that made the
    table."""

    def __init__(self, tree: Frontier) -> None:
        self.tree = tree
        self._leaves: list[bytes] = []

    @property
    def pending(self) -> int:
        """Leaves added since the last :meth:`write`."""
        return len(self._leaves)

    def add(self, seq: int, entry: bytes) -> None:
        """Event ``seq``, of canonical bytes ``entry``: the next leaf, unless
        the tree holds it already."""
        if seq > self.tree.size + len(self._leaves):
            assert seq == self.tree.size + len(self._leaves) + 1, "the log has no gaps"
            self._leaves.append(leaf_hash(entry))

    def grown(self) -> Sequence[Node]:
        """The tree grown by the pending leaves: the subtrees they complete,
        which the caller stores (:func:`write_subtrees`)."""
        self.tree, nodes = self.tree.append(self._leaves, from_level=STORED_FROM)
        self._leaves.clear()
        return nodes

    async def write(self, conn: Conn) -> Frontier:
        """Store the subtrees the pending leaves complete; the tree reached."""
        await write_subtrees(conn, self.grown())
        return self.tree


async def grow(conn: Conn, tree: Frontier, *, chunk: int = 10_000, prefetch: int = 1000) -> Frontier:
    """Add to ``tree`` (stored, as ``conn`` sees it) the leaves of every event
    after its size (see :class:`Growth`); the tree then reached. Must run
    inside a transaction (a cursor lives in one)."""
    growth = Growth(tree)
    async for row in conn.cursor(_EVENTS_AFTER, tree.size, prefetch=prefetch):
        growth.add(row["seq"], row_bytes(row))
        if growth.pending == chunk:
            await growth.write(conn)
    return await growth.write(conn)
