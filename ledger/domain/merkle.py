"""The log as a Merkle tree, as RFC 9162 section 2.1 defines it.

Leaf ``i`` is the canonical bytes of event ``seq = i + 1``. A leaf's hash is
SHA-256(0x00 || entry), an inner node's SHA-256(0x01 || left || right), and
the empty tree's SHA-256 of nothing. The tree of ``n`` leaves splits at ``k``,
the largest power of two below ``n``: its left part is always a complete
subtree, its right part the tree of what is left.

Everything here reads the tree through the hashes of its complete subtrees
(``Subtrees``: level, index → the hash of leaves ``index · 2^level`` to
``(index + 1) · 2^level``), which the store keeps as leaves are appended, so
that a root and any proof take O(log n) of them, never a scan of the leaves.
:func:`subtrees_read` names them ahead, so that they can be read in one query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

#: The hash of a complete subtree: (level, index) → hash.
Subtrees = Callable[[int, int], bytes]

#: A complete subtree as a store keeps it: (level, index, hash).
Node = tuple[int, int, bytes]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (``size`` > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def _ranges(lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """The complete subtrees (level, index) that make up leaves ``lo`` to
    ``hi``, left to right, as the tree splits them (``lo`` on a boundary of
    the largest of them, as every range the tree splits off is)."""
    while hi > lo:
        size = hi - lo
        if size & (size - 1) == 0:
            level = size.bit_length() - 1
            yield level, lo >> level
            return
        k = _split(size)
        level = k.bit_length() - 1
        yield level, lo >> level
        lo += k


def root(lo: int, hi: int, subtrees: Subtrees) -> bytes:
    """The hash of the tree of leaves ``lo`` to ``hi`` (MTH of D[lo:hi])."""
    if hi == lo:
        return EMPTY_ROOT
    hashes = [subtrees(level, index) for level, index in _ranges(lo, hi)]
    # The right-most parts join first: the tree of D[lo:hi] is
    # node(first complete subtree, tree of the rest).
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def inclusion_proof(index: int, size: int, subtrees: Subtrees) -> list[bytes]:
    """RFC 9162 PATH(index, D[size]): the audit path of leaf ``index`` in the
    tree of ``size`` leaves, from the leaf's sibling up."""
    assert 0 <= index < size
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(root(lo + k, hi, subtrees))
            hi = lo + k
        else:
            path.append(root(lo, lo + k, subtrees))
            lo += k
    path.reverse()
    return path


def consistency_proof(first: int, second: int, subtrees: Subtrees) -> list[bytes]:
    """RFC 9162 PROOF(first, D[second]): that the tree of ``first`` leaves is
    a prefix of the tree of ``second``."""
    assert 0 < first <= second
    proof: list[bytes] = []
    lo, hi, m, whole = 0, second, first, True
    while True:
        if m == hi - lo:
            if not whole:
                proof.append(root(lo, hi, subtrees))
            break
        k = _split(hi - lo)
        if m <= k:
            proof.append(root(lo + k, hi, subtrees))
            hi = lo + k
        else:
            proof.append(root(lo, lo + k, subtrees))
            lo, m, whole = lo + k, m - k, False
    proof.reverse()
    return proof


def subtrees_read(compute: Callable[[Subtrees], object]) -> set[tuple[int, int]]:
    """The complete subtrees that ``compute(subtrees)`` reads: it runs once on
    placeholder hashes, so that a store can read them all in one query first."""
    keys: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        keys.add((level, index))
        return EMPTY_ROOT

    compute(record)
    return keys


def frontier_of(size: int) -> list[tuple[int, int]]:
    """The complete subtrees (level, index) along the right edge of the tree
    of ``size`` leaves, largest first: one for each bit set in ``size``."""
    return [(level, (size >> level) - 1) for level in reversed(range(size.bit_length())) if size >> level & 1]


@dataclass(frozen=True, slots=True)
class Frontier:
    """The tree of :attr:`size` leaves as much of it as appending needs: the
    hashes of the complete subtrees :func:`frontier_of` names, largest first.

    Appending ``k`` leaves to it costs O(k + log n) hashes and gives every
    complete subtree the leaves complete, each once: what a store keeps.
    """

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        assert len(self.hashes) == self.size.bit_count(), "one hash per bit set in the size"

    def root(self) -> bytes:
        """The tree's root hash (MTH of all its leaves)."""
        if not self.hashes:
            return EMPTY_ROOT
        result = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            result = node_hash(left, result)
        return result

    def append(self, leaves: Sequence[bytes], *, from_level: int = 0) -> tuple[Frontier, list[Node]]:
        """The frontier once ``leaves`` (leaf hashes) follow, and the complete
        subtrees of ``from_level`` levels and more that they complete, each
        parent after its children."""
        levels = [level for level, _ in frontier_of(self.size)]
        hashes = list(self.hashes)
        size = self.size
        nodes: list[Node] = []
        for leaf in leaves:
            if from_level == 0:
                nodes.append((0, size, leaf))
            level, hash = 0, leaf
            size += 1
            # A subtree of 2^level leaves is complete and joins its left
            # sibling as long as the size has that bit clear above it.
            while levels and levels[-1] == level:
                levels.pop()
                level, hash = level + 1, node_hash(hashes.pop(), hash)
                if level >= from_level:
                    nodes.append((level, (size >> level) - 1, hash))
            levels.append(level)
            hashes.append(hash)
        return Frontier(size, tuple(hashes)), nodes
