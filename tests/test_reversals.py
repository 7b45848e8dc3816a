"""Reversals: POST /v1/transfers/{id}/reverse records a new posted transfer
that moves money back between the original's accounts, swapped, in part or
whole; the original's reversed_amount is the sum of its reversals, never
more than what was posted, under any interleaving."""

import asyncio
import uuid
from decimal import Decimal

import pytest

from ledger.domain.commands import ReverseTransfer
from ledger.domain.ledger import Recorded
from ledger.store.reconcile import reconcile
from ledger.store.retry import RetryPolicy
from ledger.store.write_path import AppendRequest
from ledger.store.writer import Writer
from tests.conftest import assert_log_matches_projections, balance, ledger_snapshot, transfer_body


@pytest.fixture
async def shop_and_customer(open_account):
    """A shop, and a customer whose account may never be overdrawn."""
    return await open_account(), await open_account(flags={"debits_must_not_exceed_credits": True})


@pytest.fixture
def pay(client, shop_and_customer):
    """The shop pays the customer ``amount`` (posted at once, or held)."""

    async def pay_(amount: str = "10.00", **fields):
        response = await client.post("/v1/transfers", json=transfer_body(*shop_and_customer, amount, **fields))
        assert response.status == 201, await response.text()
        return await response.json()

    return pay_


async def reverse(client, transfer, amount=None, **fields):
    body = {"id": str(uuid.uuid4()), **fields}
    if amount is not None:
        body["amount"] = amount
    return await client.post(f"/v1/transfers/{transfer['id']}/reverse", json=body)


async def get_transfer(client, transfer):
    return await (await client.get(f"/v1/transfers/{transfer['id']}")).json()


async def error_code(response):
    return (await response.json())["error"]["code"]


async def assert_reconciles_clean(db):
    report = await reconcile(db)
    assert report.ok, report.mismatches
    await assert_log_matches_projections(db)


async def test_a_transfer_not_reversed_shows_no_reversal(pay):
    transfer = await pay()
    assert (transfer["reverses"], transfer["reversed_amount"]) == (None, "0.00")


async def test_a_full_reversal_moves_the_amount_back_between_the_accounts_swapped(client, shop_and_customer, pay, db):
    shop, customer = shop_and_customer
    original = await pay("10.00")

    response = await reverse(client, original, code="refund", metadata={"order": "o-1"})

    assert response.status == 201
    reversal = await response.json()
    assert reversal["reverses"] == original["id"]
    assert (reversal["debit_account_id"], reversal["credit_account_id"]) == (customer["id"], shop["id"])
    assert (reversal["amount"], reversal["status"], reversal["code"]) == ("10.00", "posted", "refund")
    assert (await get_transfer(client, original))["reversed_amount"] == "10.00"
    assert (await balance(client, customer))["debits_posted"] == "10.00"
    assert (await balance(client, shop))["credits_posted"] == "10.00"
    assert await db.fetchval("SELECT type FROM events ORDER BY seq DESC LIMIT 1") == "transfer_reversed"
    await assert_reconciles_clean(db)


async def test_partial_reversals_add_up_and_the_default_takes_what_is_left(client, pay, db):
    original = await pay("10.00")

    first = await reverse(client, original, "2.50")
    rest = await reverse(client, original)

    assert (first.status, rest.status) == (201, 201)
    assert (await rest.json())["amount"] == "7.50"
    assert (await get_transfer(client, original))["reversed_amount"] == "10.00"
    await assert_reconciles_clean(db)


async def test_reversing_more_than_is_left_is_refused_and_changes_nothing(client, pay, db):
    original = await pay("10.00")
    assert (await reverse(client, original, "6.00")).status == 201
    before = await ledger_snapshot(db)

    response = await reverse(client, original, "4.01")

    assert response.status == 422
    assert await error_code(response) == "reversal_exceeds_amount"
    assert await ledger_snapshot(db) == before


async def test_a_transfer_reversed_in_full_has_nothing_left_to_reverse(client, pay):
    original = await pay("10.00")
    assert (await reverse(client, original)).status == 201

    response = await reverse(client, original)

    assert (response.status, await error_code(response)) == (422, "reversal_exceeds_amount")


async def test_the_same_reversal_again_is_replayed_and_moves_nothing(client, shop_and_customer, pay, db):
    _, customer = shop_and_customer
    original = await pay("10.00")
    body = {"id": str(uuid.uuid4()), "amount": "3.00"}
    first = await client.post(f"/v1/transfers/{original['id']}/reverse", json=body)
    before = await ledger_snapshot(db)

    again = await client.post(f"/v1/transfers/{original['id']}/reverse", json=body)

    assert (first.status, again.status) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await first.json()
    assert await ledger_snapshot(db) == before
    assert (await balance(client, customer))["debits_posted"] == "3.00"


async def test_a_replay_that_leaves_the_amount_out_is_the_same_reversal(client, pay, db):
    original = await pay("10.00")
    body = {"id": str(uuid.uuid4())}
    assert (await client.post(f"/v1/transfers/{original['id']}/reverse", json=body)).status == 201

    again = await client.post(f"/v1/transfers/{original['id']}/reverse", json=body)

    assert again.status == 200
    assert (await again.json())["amount"] == "10.00"


async def test_a_reversal_id_reused_with_another_amount_is_a_conflict(client, pay):
    original = await pay("10.00")
    reversal_id = str(uuid.uuid4())
    await client.post(f"/v1/transfers/{original['id']}/reverse", json={"id": reversal_id, "amount": "1.00"})

    response = await client.post(f"/v1/transfers/{original['id']}/reverse", json={"id": reversal_id, "amount": "2.00"})

    assert (response.status, await error_code(response)) == (409, "exists_with_different_fields")


async def test_a_reversal_id_that_is_another_transfer_is_a_conflict(client, pay):
    original, other = await pay("10.00"), await pay("1.00")

    response = await client.post(f"/v1/transfers/{original['id']}/reverse", json={"id": other["id"]})

    assert (response.status, await error_code(response)) == (409, "exists_with_different_fields")


async def test_a_reversal_replayed_with_metadata_true_for_1_is_a_conflict(client, pay):
    original = await pay("10.00")
    body = {"id": str(uuid.uuid4()), "metadata": {"x": 1}}
    await client.post(f"/v1/transfers/{original['id']}/reverse", json=body)

    response = await client.post(f"/v1/transfers/{original['id']}/reverse", json={**body, "metadata": {"x": True}})

    assert (response.status, await error_code(response)) == (409, "exists_with_different_fields")


async def test_a_transfer_posted_with_a_reversals_id_is_a_conflict(client, shop_and_customer, pay, db):
    shop, customer = shop_and_customer
    original = await pay("10.00")
    reversal = await (await reverse(client, original, "4.00")).json()
    before = await ledger_snapshot(db)

    # The reversal's own fields, as a plain transfer: it names no original.
    response = await client.post("/v1/transfers", json={**transfer_body(customer, shop, "4.00"), "id": reversal["id"]})

    assert (response.status, await error_code(response)) == (409, "exists_with_different_fields")
    assert "reverses" in (await response.json())["error"]["message"]
    assert await ledger_snapshot(db) == before


async def test_only_a_posted_transfer_can_be_reversed(client, pay, db):
    held = await pay("10.00", pending=True)
    voided = await pay("5.00", pending=True)
    await client.post(f"/v1/transfers/{voided['id']}/void")
    before = await ledger_snapshot(db)

    for transfer in (held, voided):
        response = await reverse(client, transfer)
        assert (response.status, await error_code(response)) == (409, "transfer_not_posted")
    assert await ledger_snapshot(db) == before


async def test_of_a_hold_posted_in_part_only_what_was_posted_can_be_reversed(client, pay):
    held = await pay("10.00", pending=True)
    await client.post(f"/v1/transfers/{held['id']}/post", json={"amount": "4.00"})

    too_much = await reverse(client, held, "4.01")
    all_of_it = await reverse(client, held)

    assert (too_much.status, await error_code(too_much)) == (422, "reversal_exceeds_amount")
    assert (all_of_it.status, (await all_of_it.json())["amount"]) == (201, "4.00")


async def test_reversing_an_unknown_transfer_is_not_found(client):
    response = await reverse(client, {"id": str(uuid.uuid4())})
    assert (response.status, await error_code(response)) == (404, "transfer_not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": "0"}, None),
        ({"amount": "-1.00"}, None),
        ({"amount": "1.001"}, None),
        ({"amount": 1.5}, "amount"),
        ({"amount": "1.00", "pendng": True}, None),
        ({}, "id"),
    ],
)
async def test_a_bad_reversal_body_is_refused_and_changes_nothing(client, pay, db, body, field):
    original = await pay("10.00")
    before = await ledger_snapshot(db)
    if "id" not in body and body:
        body = {"id": str(uuid.uuid4()), **body}

    response = await client.post(f"/v1/transfers/{original['id']}/reverse", json=body)

    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] in {"invalid_field", "amount_must_be_positive", "amount_scale_exceeded"}
    if field is not None:
        assert error["field"] == field
    assert await ledger_snapshot(db) == before


async def test_a_reversal_obeys_the_flags_of_the_account_it_debits(client, shop_and_customer, pay, db):
    _, customer = shop_and_customer
    original = await pay("10.00")
    # The customer spends 8.00 elsewhere: only 2.00 of the payment is left on it.
    elsewhere = await client.post("/v1/transfers", json=transfer_body(customer, shop_and_customer[0], "8.00"))
    assert elsewhere.status == 201
    before = await ledger_snapshot(db)

    response = await reverse(client, original, "2.01")

    assert (response.status, await error_code(response)) == (422, "exceeds_credits")
    assert await ledger_snapshot(db) == before


async def test_a_reversal_touching_a_closed_account_is_refused(client, open_account, db):
    a, b = await open_account(), await open_account()
    original = await (await client.post("/v1/transfers", json=transfer_body(a, b, "5.00"))).json()
    back = await client.post("/v1/transfers", json=transfer_body(b, a, "5.00"))
    assert back.status == 201
    assert (await client.post(f"/v1/accounts/{b['id']}/close")).status == 200

    response = await reverse(client, original)

    assert (response.status, await error_code(response)) == (422, "account_closed")


async def test_a_reversal_can_itself_be_reversed(client, shop_and_customer, pay, db):
    _, customer = shop_and_customer
    original = await pay("10.00")
    reversal = await (await reverse(client, original)).json()

    again = await reverse(client, reversal, "4.00")

    assert again.status == 201
    assert (await again.json())["reverses"] == reversal["id"]
    assert (await get_transfer(client, reversal))["reversed_amount"] == "4.00"
    assert (await balance(client, customer))["credits_posted"] == "14.00"
    await assert_reconciles_clean(db)


async def test_concurrent_reversals_of_one_transfer_never_exceed_its_amount(client, pay, db):
    original = await pay("10.00")

    responses = await asyncio.gather(*(reverse(client, original, "1.50") for _ in range(12)))

    statuses = sorted(r.status for r in responses)
    assert statuses == [201] * 6 + [422] * 6  # 6 × 1.50 = 9.00; a seventh would make 10.50
    assert (await get_transfer(client, original))["reversed_amount"] == "9.00"
    await assert_reconciles_clean(db)


async def test_reversals_in_a_batch_are_decided_in_order_with_the_transfers_before_them(client, shop_and_customer, db):
    shop, customer = shop_and_customer
    made = transfer_body(shop, customer, "10.00")
    items = [
        made,
        {"action": "reverse", "id": str(uuid.uuid4()), "reverses": made["id"], "amount": "4.00"},
        {"action": "reverse", "id": str(uuid.uuid4()), "reverses": made["id"]},
        {"action": "reverse", "id": str(uuid.uuid4()), "reverses": made["id"], "amount": "0.01"},
    ]

    response = await client.post("/v1/transfer-batches", json={"transfers": items})

    results = (await response.json())["results"]
    assert [r.get("status") or r["error"]["code"] for r in results] == [
        "created",
        "created",
        "created",
        "reversal_exceeds_amount",
    ]
    assert [r["id"] for r in results] == [item["id"] for item in items]
    original = await get_transfer(client, made)
    assert original["reversed_amount"] == "10.00"
    await assert_reconciles_clean(db)


async def test_an_atomic_batch_with_a_refused_reversal_records_nothing(client, pay, db):
    original = await pay("10.00")
    before = await ledger_snapshot(db)
    items = [
        {"action": "reverse", "id": str(uuid.uuid4()), "reverses": original["id"], "amount": "6.00"},
        {"action": "reverse", "id": str(uuid.uuid4()), "reverses": original["id"], "amount": "6.00"},
    ]

    response = await client.post("/v1/transfer-batches", json={"transfers": items, "atomic": True})

    assert response.status == 422
    assert await ledger_snapshot(db) == before
    assert (await get_transfer(client, original))["reversed_amount"] == "0.00"


async def test_a_reversed_amount_changed_behind_the_service_is_found_by_reconciliation(client, pay, db):
    original = await pay("10.00")
    assert (await reverse(client, original, "3.00")).status == 201
    await db.execute("UPDATE transfers SET reversed_amount = 5 WHERE id = $1", uuid.UUID(original["id"]))

    report = await reconcile(db)

    assert not report.ok
    [mismatch] = report.mismatches
    assert (mismatch.transfer_id, mismatch.field) == (uuid.UUID(original["id"]), "reversed_amount")
    assert (mismatch.stored, mismatch.replayed) == ("5", "3.00")


async def test_reversals_by_two_processes_at_once_never_exceed_the_amount(pay, database_url, clock, db):
    original = await pay("10.00")
    writers = [Writer(database_url, policy=RetryPolicy(), clock=clock) for _ in range(2)]
    try:
        requests = [
            [AppendRequest([ReverseTransfer(uuid.uuid4(), uuid.UUID(original["id"]), Decimal("1.00"))])]
            for _ in range(14)
        ]
        outcomes = await asyncio.gather(*(writers[n % 2].submit(r) for n, r in enumerate(requests)))
    finally:
        for writer in writers:
            writer.close()

    recorded = [o for [[o]] in outcomes if isinstance(o, Recorded)]
    assert len(recorded) == 10
    assert await db.fetchval("SELECT reversed_amount FROM transfers WHERE id = $1", uuid.UUID(original["id"])) == 10
    await assert_reconciles_clean(db)
