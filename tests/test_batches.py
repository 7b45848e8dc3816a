"""``POST /v1/transfer-batches``: many transfers, decided in order."""

import uuid
from decimal import Decimal

import msgspec

from ledger.store.write_path import SLICE
from tests.conftest import assert_log_matches_projections, ledger_snapshot, transfer_body


async def test_each_item_is_decided_in_order_against_earlier_items(client, open_account, fund, db):
    protected = await open_account(flags={"debits_must_not_exceed_credits": True})
    other = await open_account()
    await fund(protected, "10.00")
    items = [
        transfer_body(protected, other, "6.00"),
        transfer_body(protected, other, "6.00"),  # only 4.00 left: refused
        transfer_body(protected, other, "4.00"),
    ]
    response = await client.post("/v1/transfer-batches", json={"transfers": items})
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["id"] for r in results] == [i["id"] for i in items]
    assert results[0]["status"] == "created"
    assert results[1]["error"]["code"] == "exceeds_credits"
    assert results[2]["status"] == "created"
    assert results[2]["seq"] == results[0]["seq"] + 1
    await assert_log_matches_projections(db)


async def test_a_batch_longer_than_a_slice_is_decided_in_order_from_first_item_to_last(client, open_account, fund, db):
    # Decided a slice at a time; the money runs out in the second slice.
    protected = await open_account(flags={"debits_must_not_exceed_credits": True})
    other = await open_account()
    await fund(protected, "1.00")
    items = [transfer_body(protected, other, "0.01") for _ in range(3 * SLICE)]

    response = await client.post("/v1/transfer-batches", json={"transfers": items})

    results = (await response.json())["results"]
    assert [r["id"] for r in results] == [i["id"] for i in items]
    first = results[0]["seq"]
    assert [r.get("seq") for r in results[:100]] == list(range(first, first + 100))
    assert {r["error"]["code"] for r in results[100:]} == {"exceeds_credits"}
    await assert_log_matches_projections(db)


async def test_a_repeated_id_in_a_batch_is_an_existing_transfer(client, open_account, db):
    a, b = await open_account(), await open_account()
    item = transfer_body(a, b, "1.00")
    response = await client.post("/v1/transfer-batches", json={"transfers": [item, item]})
    results = (await response.json())["results"]
    assert results[0] == {"id": item["id"], "status": "created", "seq": results[0]["seq"]}
    assert results[1] == {"id": item["id"], "status": "exists", "seq": results[0]["seq"]}
    assert await db.fetchval("SELECT count(*) FROM transfers") == 1


async def test_atomic_batch_records_all_when_all_succeed(client, open_account, db):
    a, b = await open_account(), await open_account()
    items = [transfer_body(a, b, "1.00"), transfer_body(b, a, "2.00")]
    response = await client.post("/v1/transfer-batches", json={"transfers": items, "atomic": True})
    assert response.status == 200
    assert [r["status"] for r in (await response.json())["results"]] == ["created", "created"]
    await assert_log_matches_projections(db)


async def test_atomic_batch_records_nothing_when_one_fails(client, open_account, db):
    a, b = await open_account(), await open_account()
    items = [
        transfer_body(a, b, "1.00"),
        transfer_body(a, b, "1.00", debit_account_id=str(uuid.uuid4())),
        transfer_body(b, a, "1.00"),
    ]
    before = await ledger_snapshot(db)
    response = await client.post("/v1/transfer-batches", json={"transfers": items, "atomic": True})
    assert response.status == 422
    results = (await response.json())["results"]
    assert [r["error"]["code"] for r in results] == [
        "linked_transfer_failed",
        "debit_account_not_found",
        "linked_transfer_failed",
    ]
    assert await ledger_snapshot(db) == before


async def test_the_first_failing_item_of_an_atomic_batch_carries_its_code(client, open_account, fund):
    protected = await open_account(flags={"debits_must_not_exceed_credits": True})
    other = await open_account()
    await fund(protected, "5.00")
    items = [
        transfer_body(protected, other, "3.00"),
        transfer_body(protected, other, "3.00"),  # fails only because of item 0
        transfer_body(protected, other, "0"),
    ]
    response = await client.post("/v1/transfer-batches", json={"transfers": items, "atomic": True})
    codes = [r["error"]["code"] for r in (await response.json())["results"]]
    assert codes == ["linked_transfer_failed", "exceeds_credits", "linked_transfer_failed"]


async def test_a_malformed_item_refuses_the_whole_batch_naming_its_path(client, open_account, db):
    a, b = await open_account(), await open_account()
    items = [transfer_body(a, b, "1.00"), transfer_body(a, b, "1.00"), transfer_body(a, b, "1.001e2")]
    before = await ledger_snapshot(db)
    response = await client.post("/v1/transfer-batches", json={"transfers": items})
    assert response.status == 422
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == ("invalid_field", "transfers[2].amount")
    assert await ledger_snapshot(db) == before


async def test_a_batch_of_8190_is_accepted(client, open_account, db):
    a, b = await open_account(), await open_account()
    items = [transfer_body(a, b, "0.01") for _ in range(8190)]
    response = await client.post("/v1/transfer-batches", json={"transfers": items})
    assert response.status == 200
    assert all(r["status"] == "created" for r in (await response.json())["results"])
    assert await db.fetchval("SELECT debits_posted FROM balances WHERE account_id = $1", uuid.UUID(a["id"])) == Decimal(
        "81.90"
    )


async def test_a_full_batch_of_the_largest_transfers_fits_the_default_body_limit(client, open_account):
    currency = "LONGCURRENCY0001"  # 16 characters, the most a currency has
    a, b = await open_account(currency, 18), await open_account(currency, 18)
    note = {"note": "x" * (1024 - len('{"note":""}'))}  # 1 KiB as JSON, the most a transfer's metadata is
    largest = {
        "amount": "9" * 20 + "." + "9" * 18,  # 38 digits
        "code": "\N{GRINNING FACE}" * 63 + "abc",  # 255 bytes as UTF-8
        "metadata": note,
        "pending": True,
        "timeout_seconds": 366 * 24 * 3600,
    }
    body = msgspec.json.encode({"transfers": [transfer_body(a, b, **largest) for _ in range(8190)], "atomic": True})
    assert len(body) <= 16 * 2**20

    response = await client.post("/v1/transfer-batches", data=body, headers={"Content-Type": "application/json"})

    assert response.status == 200, (await response.text())[:500]


async def test_pending_transfers_posts_and_voids_are_decided_in_list_order(client, open_account, db):
    a, b = await open_account(), await open_account()
    first = transfer_body(a, b, "10.00", pending=True)
    second = transfer_body(a, b, "7.00", pending=True)
    items = [
        first,
        second,
        {"action": "post", "id": first["id"], "amount": "4.00"},
        {"action": "void", "id": second["id"]},
        {"action": "post", "id": second["id"]},  # voided just before: refused
    ]
    response = await client.post("/v1/transfer-batches", json={"transfers": items})
    assert response.status == 200
    results = (await response.json())["results"]
    seq = results[0]["seq"]
    assert results[:4] == [
        {"id": first["id"], "status": "created", "seq": seq},
        {"id": second["id"], "status": "created", "seq": seq + 1},
        {"id": first["id"], "status": "created", "seq": seq + 2},
        {"id": second["id"], "status": "created", "seq": seq + 3},
    ]
    assert results[4]["error"]["code"] == "transfer_already_voided"
    stored = {t: await (await client.get(f"/v1/transfers/{t}")).json() for t in (first["id"], second["id"])}
    assert (stored[first["id"]]["status"], stored[first["id"]]["posted_amount"]) == ("posted", "4.00")
    assert stored[second["id"]]["status"] == "voided"
    await assert_log_matches_projections(db)


async def test_a_repeated_decision_in_a_batch_points_at_the_deciding_event(client, open_account):
    a, b = await open_account(), await open_account()
    held = await (await client.post("/v1/transfers", json=transfer_body(a, b, "5.00", pending=True))).json()
    post = {"action": "post", "id": held["id"]}
    response = await client.post("/v1/transfer-batches", json={"transfers": [post, post]})
    results = (await response.json())["results"]
    assert results[0] == {"id": held["id"], "status": "created", "seq": held["seq"] + 1}
    assert results[1] == {"id": held["id"], "status": "exists", "seq": held["seq"] + 1}


async def test_atomic_batch_with_a_failing_decision_records_nothing(client, open_account, db):
    a, b = await open_account(), await open_account()
    held = await (await client.post("/v1/transfers", json=transfer_body(a, b, "5.00", pending=True))).json()
    fresh = transfer_body(a, b, "3.00", pending=True)
    items = [
        fresh,
        {"action": "post", "id": fresh["id"]},
        {"action": "void", "id": held["id"]},
        {"action": "post", "id": held["id"], "amount": "9.00"},  # over the held 5.00
    ]
    before = await ledger_snapshot(db)
    response = await client.post("/v1/transfer-batches", json={"transfers": items, "atomic": True})
    assert response.status == 422
    codes = [r["error"]["code"] for r in (await response.json())["results"]]
    # The void came first and left nothing to post: that is the failing item.
    assert codes == ["linked_transfer_failed"] * 3 + ["transfer_already_voided"]
    assert await ledger_snapshot(db) == before
    assert (await (await client.get(f"/v1/transfers/{held['id']}")).json())["status"] == "pending"
