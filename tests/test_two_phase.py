"""Two-phase transfers: hold, then post (all or part) or void; decisions are
events, second decisions are idempotent or refused, holds count against flags."""

import uuid

import msgspec
import pytest

from tests.conftest import assert_log_matches_projections, balance, ledger_snapshot, transfer_body

HELD = {"debits_pending": "25.00", "credits_pending": "25.00"}


@pytest.fixture
async def pair(open_account):
    return await open_account(), await open_account()


@pytest.fixture
def hold(client, pair):
    """Make a pending transfer of ``amount`` from the pair's first account to the second."""

    async def hold_(amount: str = "25.00", **fields):
        response = await client.post("/v1/transfers", json=transfer_body(*pair, amount, pending=True, **fields))
        assert response.status == 201, await response.text()
        return await response.json()

    return hold_


async def post(client, transfer, **body):
    return await client.post(f"/v1/transfers/{transfer['id']}/post", json=body or None)


async def void(client, transfer):
    return await client.post(f"/v1/transfers/{transfer['id']}/void")


async def error_code(response):
    return (await response.json())["error"]["code"]


async def last_event(db):
    return await db.fetchrow("SELECT type, stream_id, data FROM events ORDER BY seq DESC LIMIT 1")


async def test_pending_transfer_holds_the_amount_on_both_accounts(client, pair, hold, db):
    transfer = await hold()
    assert transfer["status"] == "pending"
    assert transfer["pending"] is True
    assert transfer["expires_at"] is None
    assert transfer["posted_amount"] is None
    debit, credit = [await balance(client, a) for a in pair]
    assert (debit["debits_pending"], debit["debits_posted"]) == ("25.00", "0.00")
    assert (credit["credits_pending"], credit["credits_posted"]) == ("25.00", "0.00")
    assert (await last_event(db))["type"] == "transfer_pending"
    await assert_log_matches_projections(db)


async def test_post_moves_the_whole_held_amount_to_posted(client, pair, hold, db):
    transfer = await hold()
    response = await post(client, transfer)
    assert response.status == 200
    assert "Idempotent-Replayed" not in response.headers
    posted = await response.json()
    assert posted["status"] == "posted"
    assert posted["posted_amount"] == "25.00"
    assert posted["seq"] == transfer["seq"]
    assert posted["decided_seq"] == transfer["seq"] + 1
    debit, credit = [await balance(client, a) for a in pair]
    assert (debit["debits_pending"], debit["debits_posted"]) == ("0.00", "25.00")
    assert (credit["credits_pending"], credit["credits_posted"]) == ("0.00", "25.00")
    event = await last_event(db)
    assert (event["type"], event["data"]["amount"]) == ("pending_transfer_posted", "25.00")
    await assert_log_matches_projections(db)


async def test_partial_post_releases_the_rest(client, pair, hold, db):
    transfer = await hold()
    response = await post(client, transfer, amount="10")
    assert response.status == 200
    assert (await response.json())["posted_amount"] == "10.00"
    debit, credit = [await balance(client, a) for a in pair]
    assert (debit["debits_pending"], debit["debits_posted"]) == ("0.00", "10.00")
    assert (credit["credits_pending"], credit["credits_posted"]) == ("0.00", "10.00")
    await assert_log_matches_projections(db)


async def test_void_releases_the_held_amount(client, pair, hold, db):
    transfer = await hold()
    response = await void(client, transfer)
    assert response.status == 200
    voided = await response.json()
    assert voided["status"] == "voided"
    assert voided["posted_amount"] is None
    for account in pair:
        assert set((await balance(client, account)).values()) == {"0.00"}
    assert (await last_event(db))["type"] == "pending_transfer_voided"
    await assert_log_matches_projections(db)


async def test_posting_a_posted_transfer_with_the_same_amount_changes_nothing(client, hold, db):
    transfer = await hold()
    first = await (await post(client, transfer, amount="10.00")).json()
    before = await ledger_snapshot(db)
    response = await post(client, transfer, amount="10")
    assert response.status == 200
    assert response.headers["Idempotent-Replayed"] == "true"
    assert await response.json() == first
    assert await ledger_snapshot(db) == before


async def test_posting_a_posted_transfer_with_another_amount_is_409(client, hold, db):
    transfer = await hold()
    await post(client, transfer, amount="10.00")
    before = await ledger_snapshot(db)
    # No amount means all of it: 25.00, not the 10.00 posted.
    for response in (await post(client, transfer, amount="11.00"), await post(client, transfer)):
        assert response.status == 409
        assert await error_code(response) == "transfer_already_posted"
    assert await ledger_snapshot(db) == before


async def test_voiding_a_posted_transfer_is_409(client, hold, db):
    transfer = await hold()
    await post(client, transfer)
    before = await ledger_snapshot(db)
    response = await void(client, transfer)
    assert response.status == 409
    assert await error_code(response) == "transfer_already_posted"
    assert await ledger_snapshot(db) == before


async def test_voiding_a_voided_transfer_changes_nothing(client, hold, db):
    transfer = await hold()
    first = await (await void(client, transfer)).json()
    before = await ledger_snapshot(db)
    response = await void(client, transfer)
    assert response.status == 200
    assert response.headers["Idempotent-Replayed"] == "true"
    assert await response.json() == first
    assert await ledger_snapshot(db) == before


async def test_posting_a_voided_transfer_is_409(client, hold, db):
    transfer = await hold()
    await void(client, transfer)
    before = await ledger_snapshot(db)
    response = await post(client, transfer)
    assert response.status == 409
    assert await error_code(response) == "transfer_already_voided"
    assert await ledger_snapshot(db) == before


@pytest.mark.parametrize(
    "amount, code",
    [
        ("25.01", "post_amount_exceeds_pending"),
        ("1.001", "amount_scale_exceeded"),
        ("0", "amount_must_be_positive"),
        ("-1.00", "amount_must_be_positive"),
    ],
)
async def test_post_amount_must_be_within_the_held_amount(client, hold, db, amount, code):
    transfer = await hold()
    before = await ledger_snapshot(db)
    response = await post(client, transfer, amount=amount)
    assert response.status == 422
    assert await error_code(response) == code
    assert await ledger_snapshot(db) == before


async def test_posting_a_transfer_that_was_posted_at_once(client, pair, db):
    transfer = await (await client.post("/v1/transfers", json=transfer_body(*pair, "5.00"))).json()
    assert transfer["posted_amount"] == "5.00"
    before = await ledger_snapshot(db)
    same = await post(client, transfer)
    assert (same.status, same.headers["Idempotent-Replayed"]) == (200, "true")
    other = await post(client, transfer, amount="1.00")
    assert (other.status, await error_code(other)) == (409, "transfer_already_posted")
    assert await ledger_snapshot(db) == before


async def test_holds_count_against_the_overdraft_flag(client, open_account, fund, db):
    wallet = await open_account(flags={"debits_must_not_exceed_credits": True})
    shop = await open_account()
    await fund(wallet, "10.00")
    first = await client.post("/v1/transfers", json=transfer_body(wallet, shop, "8.00", pending=True))
    assert first.status == 201
    second = transfer_body(wallet, shop, "5.00", pending=True)
    response = await client.post("/v1/transfers", json=second)
    assert (response.status, await error_code(response)) == (422, "exceeds_credits")
    await void(client, await first.json())
    assert (await client.post("/v1/transfers", json=second)).status == 201
    await assert_log_matches_projections(db)


async def test_replaying_a_pending_transfer_returns_it_as_it_is_now(client, pair, db):
    body = transfer_body(*pair, "25.00", pending=True)
    created = await (await client.post("/v1/transfers", json=body)).json()
    await void(client, created)
    response = await client.post("/v1/transfers", json=body)
    assert response.status == 200
    assert (await response.json())["status"] == "voided"
    changed = await client.post("/v1/transfers", json={**body, "pending": False})
    assert (changed.status, await error_code(changed)) == (409, "exists_with_different_fields")


async def test_decisions_accept_an_empty_object_or_no_body(client, hold):
    first, second = await hold(), await hold()
    assert (await client.post(f"/v1/transfers/{first['id']}/post", json={})).status == 200
    assert (await client.post(f"/v1/transfers/{second['id']}/void", data=b"")).status == 200


async def test_decisions_speak_messagepack(client, hold):
    transfer = await hold()
    response = await client.post(
        f"/v1/transfers/{transfer['id']}/post",
        data=msgspec.msgpack.encode({"amount": "3.00"}),
        headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
    )
    assert response.status == 200
    assert msgspec.msgpack.decode(await response.read())["posted_amount"] == "3.00"


async def test_post_of_an_unknown_transfer_is_404(client):
    response = await client.post(f"/v1/transfers/{uuid.uuid4()}/post")
    assert (response.status, await error_code(response)) == (404, "transfer_not_found")
