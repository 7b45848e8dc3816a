"""Closing an account: refused while it holds pending amounts; afterwards no
transfer may touch it; closing is an event, and closing twice changes nothing."""

import pytest

from tests.conftest import assert_log_matches_projections, ledger_snapshot, transfer_body


async def close(client, account):
    return await client.post(f"/v1/accounts/{account['id']}/close")


async def error_code(response):
    return (await response.json())["error"]["code"]


async def test_closing_an_account_records_an_event(client, open_account, db):
    account = await open_account()
    response = await close(client, account)
    assert response.status == 200
    closed = await response.json()
    assert closed["closed"] is True
    assert closed["id"] == account["id"]
    event = await db.fetchrow("SELECT type, stream_id FROM events ORDER BY seq DESC LIMIT 1")
    assert (event["type"], str(event["stream_id"])) == ("account_closed", account["id"])
    assert (await (await client.get(f"/v1/accounts/{account['id']}")).json())["closed"] is True
    await assert_log_matches_projections(db)


async def test_closing_a_closed_account_changes_nothing(client, open_account, db):
    account = await open_account()
    first = await (await close(client, account)).json()
    before = await ledger_snapshot(db)
    response = await close(client, account)
    assert response.status == 200
    assert response.headers["Idempotent-Replayed"] == "true"
    assert await response.json() == first
    assert await ledger_snapshot(db) == before


@pytest.mark.parametrize("side", ["debit", "credit"])
async def test_closing_is_refused_while_the_account_has_pending_amounts(client, open_account, db, side):
    account, other = await open_account(), await open_account()
    sides = (account, other) if side == "debit" else (other, account)
    held = await (await client.post("/v1/transfers", json=transfer_body(*sides, "5.00", pending=True))).json()
    before = await ledger_snapshot(db)
    response = await close(client, account)
    assert (response.status, await error_code(response)) == (409, "account_has_pending")
    assert await ledger_snapshot(db) == before
    await client.post(f"/v1/transfers/{held['id']}/void")
    assert (await close(client, account)).status == 200


@pytest.mark.parametrize("side", ["debit", "credit"])
@pytest.mark.parametrize("pending", [False, True])
async def test_a_transfer_touching_a_closed_account_is_refused(client, open_account, db, side, pending):
    account, other = await open_account(), await open_account()
    await close(client, account)
    before = await ledger_snapshot(db)
    sides = (account, other) if side == "debit" else (other, account)
    response = await client.post("/v1/transfers", json=transfer_body(*sides, "1.00", pending=pending))
    assert (response.status, await error_code(response)) == (422, "account_closed")
    assert await ledger_snapshot(db) == before


async def test_transfers_made_before_closing_stay_readable_and_replayable(client, open_account):
    account, other = await open_account(), await open_account()
    body = transfer_body(other, account, "3.00")
    created = await (await client.post("/v1/transfers", json=body)).json()
    await close(client, account)
    replay = await client.post("/v1/transfers", json=body)
    assert replay.status == 200
    assert await replay.json() == created
    assert (await client.get(f"/v1/transfers/{created['id']}")).status == 200
