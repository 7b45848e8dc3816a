"""GET /v1/proofs/inclusion and /consistency: RFC 9162 proofs served from the
stored tree, checked by the RFC's own verification algorithms (written out
in tests/test_merkle.py) against roots computed here from the served events."""

import asyncio

import pytest

from tests.conftest import canonical_bytes, transfer_body
from tests.test_merkle import flipped, mth, verify_consistency, verify_inclusion
from tests.test_verifiable_log import served_events

EVENTS = 70


@pytest.fixture
async def log_of_70(client, open_account):
    """70 events: 2 accounts, then transfers one batch at a time, so that the
    tree grows across appends. Their canonical bytes, as served."""
    a, b = await open_account(), await open_account()
    for size in (1, 5, 13, 30, 19):
        items = [transfer_body(a, b, "1.00") for _ in range(size)]
        assert (await client.post("/v1/transfer-batches", json={"transfers": items})).status == 200
    entries = [canonical_bytes(line) for line in await served_events(client)]
    assert len(entries) == EVENTS
    return entries


async def proof(client, path: str, **params: int) -> dict:
    response = await client.get(path, params={k: str(v) for k, v in params.items()})
    assert response.status == 200, await response.text()
    return await response.json()


async def test_every_event_is_in_every_tree_that_holds_it(client, log_of_70):
    roots = {size: mth(log_of_70[:size]) for size in range(1, EVENTS + 1)}

    async def check(seq: int, size: int) -> None:
        found = await proof(client, "/v1/proofs/inclusion", seq=seq, tree_size=size)
        assert (found["seq"], found["leaf_index"], found["tree_size"]) == (seq, seq - 1, size)
        leaf = bytes.fromhex(found["leaf_hash"])
        assert leaf == mth(log_of_70[seq - 1 : seq])
        path = [bytes.fromhex(h) for h in found["audit_path"]]
        assert verify_inclusion(seq - 1, size, leaf, path, roots[size]), (seq, size)

    for size in range(1, EVENTS + 1):
        await asyncio.gather(*(check(seq, size) for seq in range(1, size + 1)))


async def test_every_tree_of_the_log_is_a_prefix_of_every_later_one(client, log_of_70):
    roots = {size: mth(log_of_70[:size]) for size in range(1, EVENTS + 1)}

    async def check(first: int, second: int) -> None:
        found = await proof(client, "/v1/proofs/consistency", first=first, second=second)
        assert (found["first"], found["second"]) == (first, second)
        hashes = [bytes.fromhex(h) for h in found["proof"]]
        assert verify_consistency(first, second, roots[first], roots[second], hashes), (first, second)

    for second in range(1, EVENTS + 1):
        await asyncio.gather(*(check(first, second) for first in range(1, second + 1)))


async def test_the_tree_size_of_an_inclusion_proof_is_the_head_if_not_given(client, log_of_70):
    found = await proof(client, "/v1/proofs/inclusion", seq=17)
    assert found["tree_size"] == EVENTS
    path = [bytes.fromhex(h) for h in found["audit_path"]]
    assert verify_inclusion(16, EVENTS, bytes.fromhex(found["leaf_hash"]), path, mth(log_of_70))


async def test_a_flipped_byte_fails_a_served_proof(client, log_of_70):
    found = await proof(client, "/v1/proofs/inclusion", seq=33, tree_size=EVENTS)
    leaf, path = bytes.fromhex(found["leaf_hash"]), [bytes.fromhex(h) for h in found["audit_path"]]
    root = mth(log_of_70)
    assert verify_inclusion(32, EVENTS, leaf, path, root)
    assert not verify_inclusion(32, EVENTS, flipped(leaf), path, root)
    for i in range(len(path)):
        assert not verify_inclusion(32, EVENTS, leaf, [*path[:i], flipped(path[i]), *path[i + 1 :]], root)
    consistency = await proof(client, "/v1/proofs/consistency", first=21, second=EVENTS)
    hashes = [bytes.fromhex(h) for h in consistency["proof"]]
    first_root = mth(log_of_70[:21])
    assert verify_consistency(21, EVENTS, first_root, root, hashes)
    assert not verify_consistency(21, EVENTS, flipped(first_root), root, hashes)


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/proofs/inclusion", {"seq": "0"}, "seq"),
        ("/v1/proofs/inclusion", {"seq": "71"}, "seq"),
        ("/v1/proofs/inclusion", {"seq": "5", "tree_size": "71"}, "tree_size"),
        ("/v1/proofs/inclusion", {"seq": "9", "tree_size": "8"}, "seq"),
        ("/v1/proofs/inclusion", {"seq": "9223372036854775808"}, "seq"),
        ("/v1/proofs/inclusion", {"seq": "-1"}, "seq"),
        ("/v1/proofs/inclusion", {"seq": "1.5"}, "seq"),
        ("/v1/proofs/inclusion", {"seq": "1e0"}, "seq"),
        ("/v1/proofs/inclusion", {}, "seq"),
        ("/v1/proofs/inclusion", {"seq": "1", "tree": "3"}, "tree"),
        ("/v1/proofs/consistency", {"first": "0", "second": "5"}, "first"),
        ("/v1/proofs/consistency", {"first": "6", "second": "5"}, "first"),
        ("/v1/proofs/consistency", {"first": "5", "second": "71"}, "second"),
        ("/v1/proofs/consistency", {"first": "5"}, "second"),
        ("/v1/proofs/consistency", {"first": "x", "second": "5"}, "first"),
    ],
)
async def test_sizes_outside_the_log_are_refused_naming_the_parameter(client, log_of_70, path, params, field):
    response = await client.get(path, params=params)
    assert response.status == 422
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == ("invalid_field", field)


async def test_a_parameter_given_twice_is_refused(client, log_of_70):
    response = await client.get("/v1/proofs/inclusion?seq=1&seq=2")
    assert response.status == 422 and (await response.json())["error"]["field"] == "seq"


async def test_an_empty_log_proves_nothing(client):
    response = await client.get("/v1/proofs/inclusion", params={"seq": "1"})
    assert response.status == 422
