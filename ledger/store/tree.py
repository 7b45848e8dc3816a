"""The Merkle tree of the log as the store keeps it (RFC 9162 section 2.1;
the arithmetic is :mod:`ledger.domain.merkle`'s).

``merkle_subtrees`` holds the hash of every complete subtree, leaves
(level 0) included. Every append adds the subtrees its events complete in
the transaction that adds the events (:mod:`ledger.store.write_path`), so
that a tree of ``n`` leaves is always exactly the log's ``n`` events, and a
root or any proof is O(log n) rows read by primary key, never a scan.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

from ..domain.merkle import Frontier, Node, Subtrees, leaf_hash, subtrees_read
from .connection import Conn
from .head import LogHead
from .replay import row_bytes
from .tables import EVENTS, SUBTREES, Placeholders

#: The head of the log and the frontier of its tree, in one snapshot: the
#: frontier of ``n`` leaves is one subtree per bit set in ``n``
#: (:func:`~ledger.domain.merkle.frontier_of`), largest first.
_TIP = """
    SELECT h.seq, h.hash, h.epoch, ARRAY(
        SELECT m.hash FROM generate_series(62, 0, -1) AS l(level)
        JOIN merkle_subtrees AS m ON m.level = l.level AND m.index = (h.seq >> l.level) - 1
        WHERE (h.seq >> l.level) & 1 = 1
        ORDER BY l.level DESC
    ) AS frontier
    FROM ledger_head AS h
"""

_SUBTREES = """
    SELECT m.level, m.index, m.hash
    FROM unnest($1::smallint[], $2::bigint[]) AS k(level, index)
    JOIN merkle_subtrees AS m USING (level, index)
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
    """The arguments of :func:`insert_subtrees`, by name."""
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


async def read_tip(conn: Conn) -> tuple[LogHead, Frontier]:
    """The head of the log and the frontier of its tree, as ``conn`` sees them."""
    row = await conn.fetchrow(_TIP)
    assert row is not None  # ledger_head holds exactly one row (migration 0001)
    head = LogHead(row["seq"], row["hash"], row["epoch"])
    return head, Frontier(head.seq, tuple(row["frontier"]))


async def read_subtrees(conn: Conn, keys: Collection[tuple[int, int]]) -> Subtrees:
    """The hashes of the complete subtrees ``keys`` (level, index), in one
    query; asking for any other is an error."""
    levels, indexes = zip(*keys, strict=True) if keys else ((), ())
    rows = await conn.fetch(_SUBTREES, list(levels), list(indexes))
    found: dict[tuple[int, int], bytes] = {(row["level"], row["index"]): row["hash"] for row in rows}

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


async def grow(conn: Conn, tree: Frontier, *, chunk: int = 10_000, prefetch: int = 1000) -> Frontier:
    """Add to ``tree`` (stored, as ``conn`` sees it) the leaves of every event
    after its size, in seq order, storing the subtrees they complete; the
    tree then reached. For what adds events other than by appending (an
    import, the migration that made the table). Must run inside a
    transaction (a cursor lives in one)."""
    leaves: list[bytes] = []
    async for row in conn.cursor(_EVENTS_AFTER, tree.size, prefetch=prefetch):
        assert row["seq"] == tree.size + len(leaves) + 1, "the log has no gaps"
        leaves.append(leaf_hash(row_bytes(row)))
        if len(leaves) == chunk:
            tree = await _grown(conn, tree, leaves)
            leaves.clear()
    return await _grown(conn, tree, leaves)


async def _grown(conn: Conn, tree: Frontier, leaves: list[bytes]) -> Frontier:
    grown, nodes = tree.append(leaves)
    await write_subtrees(conn, nodes)
    return grown
