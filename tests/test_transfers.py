"""Posted transfers: moving money, idempotency, account flags."""

import uuid

import pytest

from tests.conftest import assert_log_matches_projections, balance, ledger_snapshot, transfer_body


async def test_transfer_moves_money_from_debit_to_credit(client, open_account, db):
    a, b = await open_account(), await open_account()
    body = transfer_body(a, b, "25.5", code="card_payment", metadata={"order": 7})
    response = await client.post("/v1/transfers", json=body)
    assert response.status == 201
    transfer = await response.json()
    assert transfer["amount"] == "25.50"
    assert transfer["status"] == "posted"
    assert transfer["code"] == "card_payment"
    assert transfer["seq"] == 3
    assert (await balance(client, a))["debits_posted"] == "25.50"
    assert (await balance(client, b))["credits_posted"] == "25.50"
    await assert_log_matches_projections(db)


async def test_get_transfer_returns_the_stored_transfer(client, open_account):
    a, b = await open_account(), await open_account()
    created = await (await client.post("/v1/transfers", json=transfer_body(a, b, "1"))).json()
    response = await client.get(f"/v1/transfers/{created['id']}")
    assert response.status == 200
    assert await response.json() == created


async def test_unknown_transfer_is_404(client):
    response = await client.get(f"/v1/transfers/{uuid.uuid4()}")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "transfer_not_found"


async def test_replay_with_same_fields_moves_nothing_twice(client, open_account, db):
    a, b = await open_account(), await open_account()
    body = transfer_body(a, b, "5.00")
    first = await client.post("/v1/transfers", json=body)
    replay = await client.post("/v1/transfers", json={**body, "amount": "5.0"})
    assert (first.status, replay.status) == (201, 200)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await replay.json() == await first.json()
    assert (await balance(client, a))["debits_posted"] == "5.00"
    assert await db.fetchval("SELECT count(*) FROM transfers") == 1


async def test_replay_with_different_fields_is_409_and_changes_nothing(client, open_account, db):
    a, b = await open_account(), await open_account()
    body = transfer_body(a, b, "5.00")
    await client.post("/v1/transfers", json=body)
    before = await ledger_snapshot(db)
    response = await client.post("/v1/transfers", json={**body, "amount": "6.00"})
    assert response.status == 409
    error = (await response.json())["error"]
    assert error["code"] == "exists_with_different_fields"
    assert "amount" in error["message"]
    assert await ledger_snapshot(db) == before


@pytest.mark.parametrize(
    ("stored", "given"),
    [({"refunded": 1}, {"refunded": True}), ({"flag": False}, {"flag": 0}), ({"a": [{"b": True}]}, {"a": [{"b": 1}]})],
    ids=["1 then true", "false then 0", "nested true then 1"],
)
async def test_a_replay_whose_metadata_differs_as_json_booleans_and_numbers_is_409(
    client, open_account, db, stored, given
):
    a, b = await open_account(), await open_account()
    body = transfer_body(a, b, "5.00", metadata=stored)
    await client.post("/v1/transfers", json=body)
    before = await ledger_snapshot(db)

    response = await client.post("/v1/transfers", json={**body, "metadata": given})

    assert response.status == 409
    error = (await response.json())["error"]
    assert (error["code"], "metadata" in error["message"]) == ("exists_with_different_fields", True)
    assert await ledger_snapshot(db) == before


async def test_debits_must_not_exceed_credits_refuses_an_overdraft(client, open_account, fund, db):
    protected = await open_account(flags={"debits_must_not_exceed_credits": True})
    other = await open_account()
    await fund(protected, "10.00")
    ok = await client.post("/v1/transfers", json=transfer_body(protected, other, "10.00"))
    assert ok.status == 201
    before = await ledger_snapshot(db)
    refused = await client.post("/v1/transfers", json=transfer_body(protected, other, "0.01"))
    assert refused.status == 422
    assert (await refused.json())["error"]["code"] == "exceeds_credits"
    assert await ledger_snapshot(db) == before


async def test_credits_must_not_exceed_debits_refuses_excess_credit(client, open_account, db):
    capped = await open_account(flags={"credits_must_not_exceed_debits": True})
    other = await open_account()
    before = await ledger_snapshot(db)
    refused = await client.post("/v1/transfers", json=transfer_body(other, capped, "1.00"))
    assert refused.status == 422
    assert (await refused.json())["error"]["code"] == "exceeds_debits"
    assert await ledger_snapshot(db) == before


async def test_request_id_is_echoed_and_recorded_with_the_event(client, open_account, db):
    a, b = await open_account(), await open_account()
    body = transfer_body(a, b, "1.00")
    response = await client.post("/v1/transfers", json=body, headers={"X-Request-ID": "req-123"})
    assert response.headers["X-Request-ID"] == "req-123"
    metadata = await db.fetchval("SELECT metadata FROM events WHERE stream_id = $1", uuid.UUID(body["id"]))
    assert metadata == {"request_id": "req-123"}


async def test_a_request_id_is_generated_when_none_is_sent(client):
    response = await client.get("/health/live")
    made = response.headers["X-Request-ID"]
    assert str(uuid.UUID(made)) == made and uuid.UUID(made).version == 4


async def test_generated_request_ids_are_all_different(client):
    # More requests than the ids drawn at a time, so that a new draw is made.
    made = [(await client.get("/health/live")).headers["X-Request-ID"] for _ in range(600)]
    assert len(set(made)) == len(made)
    assert {uuid.UUID(m).variant for m in made} == {uuid.RFC_4122}


async def test_amounts_up_to_38_digits_stay_exact(client, open_account):
    a, b = await open_account(scale=18), await open_account(scale=18)
    amount = "12345678901234567890.123456789012345678"
    for _ in range(3):
        assert (await client.post("/v1/transfers", json=transfer_body(a, b, amount))).status == 201
    assert (await balance(client, b))["credits_posted"] == "37037036703703703670.370370367037037034"
