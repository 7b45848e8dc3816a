"""The Merkle tree of RFC 9162 section 2.1 (ledger.domain.merkle): roots,
inclusion and consistency proofs read from complete subtrees only, checked
by a verifier written here from the RFC's own algorithms (2.1.3.2, 2.1.4.2)."""

import hashlib

import pytest

from ledger.domain import merkle


def mth(entries: list[bytes]) -> bytes:
    """MTH, as RFC 9162 2.1.1 defines it, straight from the leaves."""
    if not entries:
        return hashlib.sha256(b"").digest()
    if len(entries) == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < len(entries):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(entries[:k]) + mth(entries[k:])).digest()


def subtrees_of(entries: list[bytes]):
    """Complete subtrees as a store keeps them, computed here from the leaves;
    it fails on any range that is not a complete subtree inside the tree."""

    def subtree(level: int, index: int) -> bytes:
        lo, hi = index << level, (index + 1) << level
        assert hi <= len(entries), f"subtree ({level}, {index}) is past the tree"
        return mth(entries[lo:hi])

    return subtree


def verify_inclusion(index: int, size: int, leaf: bytes, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2, step by step."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2, step by step."""
    if first == second:
        return not proof and first_root == second_root
    if not proof:
        return False
    if first & (first - 1) == 0:  # a power of two: the first root is the proof's start
        proof = [first_root, *proof]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = hashlib.sha256(b"\x01" + c + fr).digest()
            sr = hashlib.sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hashlib.sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


def entries(count: int) -> list[bytes]:
    return [f'{{"seq":{n + 1}}}'.encode() for n in range(count)]


SIZES = [*range(1, 71), 127, 128, 129, 255, 256, 257]
LOG = entries(max(SIZES))


@pytest.mark.parametrize("size", [0, *SIZES])
def test_the_root_read_from_complete_subtrees_is_the_rfcs_mth(size):
    assert merkle.root(0, size, subtrees_of(LOG[:size])) == mth(LOG[:size])


@pytest.mark.parametrize("size", SIZES)
def test_every_inclusion_proof_verifies_by_the_rfcs_algorithm(size):
    tree, subtrees = LOG[:size], subtrees_of(LOG[:size])
    root = mth(tree)
    indexes = range(size) if size <= 70 else {0, 1, size // 2, size - 2, size - 1}
    for index in indexes:
        path = merkle.inclusion_proof(index, size, subtrees)
        assert verify_inclusion(index, size, merkle.leaf_hash(tree[index]), path, root), index


@pytest.mark.parametrize("second", SIZES)
def test_every_consistency_proof_verifies_by_the_rfcs_algorithm(second):
    subtrees = subtrees_of(LOG[:second])
    firsts = range(1, second + 1) if second <= 70 else {1, 2, second // 2, second - 1, second}
    for first in firsts:
        proof = merkle.consistency_proof(first, second, subtrees)
        assert verify_consistency(first, second, mth(LOG[:first]), mth(LOG[:second]), proof), first


def flipped(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


def test_a_flipped_byte_anywhere_fails_an_inclusion_proof():
    size, index = 37, 20
    tree, subtrees = LOG[:size], subtrees_of(LOG[:size])
    path, root, leaf = merkle.inclusion_proof(index, size, subtrees), mth(tree), merkle.leaf_hash(tree[index])
    assert not verify_inclusion(index, size, flipped(leaf), path, root)
    assert not verify_inclusion(index, size, leaf, path, flipped(root))
    for n in range(len(path)):
        assert not verify_inclusion(index, size, leaf, [*path[:n], flipped(path[n]), *path[n + 1 :]], root)


def test_a_flipped_byte_anywhere_fails_a_consistency_proof():
    first, second = 13, 45
    proof = merkle.consistency_proof(first, second, subtrees_of(LOG[:second]))
    old, new = mth(LOG[:first]), mth(LOG[:second])
    assert not verify_consistency(first, second, flipped(old), new, proof)
    assert not verify_consistency(first, second, old, flipped(new), proof)
    for n in range(len(proof)):
        assert not verify_consistency(first, second, old, new, [*proof[:n], flipped(proof[n]), *proof[n + 1 :]])


def test_a_proof_reads_logarithmically_many_subtrees_named_ahead():
    size = 1_000_000
    read = merkle.subtrees_read(lambda subtrees: merkle.inclusion_proof(123_456, size, subtrees))
    assert len(read) <= 2 * size.bit_length()
    assert all(((index + 1) << level) <= size for level, index in read)


@pytest.mark.parametrize("size", range(0, 40))
def test_a_frontier_appended_to_gives_every_complete_subtree_and_the_root(size):
    entries = [b"entry %d" % i for i in range(size)]
    leaves = [merkle.leaf_hash(e) for e in entries]
    subtree = subtrees_of(entries)
    for cut in {0, size // 3, size // 2, size}:
        before, nodes = merkle.Frontier().append(leaves[:cut])
        after, more = before.append(leaves[cut:])
        nodes += more
        assert after.size == size and after.root() == mth(entries)
        assert before.root() == mth(entries[:cut])
        complete = {(level, index) for level in range(size.bit_length()) for index in range(size >> level)}
        assert [(level, index) for level, index, _ in nodes if (level, index) in complete] == [
            (level, index) for level, index, _ in nodes
        ]
        assert {(level, index) for level, index, _ in nodes} == complete
        assert len(nodes) == len(complete)
        assert all(hash == subtree(level, index) for level, index, hash in nodes)


def test_a_frontier_read_back_by_its_subtrees_continues_the_same_tree():
    entries = [b"e%d" % i for i in range(45)]
    subtree = subtrees_of(entries)
    read = merkle.Frontier(13, tuple(subtree(level, index) for level, index in merkle.frontier_of(13)))
    grown, _ = read.append([merkle.leaf_hash(e) for e in entries[13:]])
    assert grown.root() == mth(entries)


def test_a_frontier_gives_only_the_subtrees_from_the_level_asked_for():
    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(100)]
    start, _ = merkle.Frontier().append(leaves[:37])
    every = start.append(leaves[37:])
    high = start.append(leaves[37:], from_level=4)
    assert high[0] == every[0]
    assert high[1] == [node for node in every[1] if node[0] >= 4]
