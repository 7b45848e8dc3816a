"""Many concurrent clients on a few hot accounts: nothing lost, duplicated or invented."""

import asyncio
import random
import uuid
from collections import Counter

from tests.conftest import assert_log_matches_projections, transfer_body

HOT = 4
REQUESTS = 240


async def hot_accounts(open_account, fund):
    accounts = [await open_account(flags={"debits_must_not_exceed_credits": True}) for _ in range(HOT)]
    for account in accounts:
        await fund(account, "100.00")
    return accounts


def random_transfers(accounts, count, rng):
    bodies = []
    for _ in range(count):
        debit, credit = rng.sample(accounts, 2)
        bodies.append(transfer_body(debit, credit, f"{rng.randint(1, 6000) / 100:.2f}"))
    return bodies


async def test_concurrent_transfers_over_hot_accounts_keep_the_ledger_exact(client, open_account, fund, db):
    accounts = await hot_accounts(open_account, fund)
    bodies = random_transfers(accounts, REQUESTS, random.Random(7))
    responses = await asyncio.gather(*(client.post("/v1/transfers", json=b) for b in bodies))
    statuses = Counter(r.status for r in responses)
    assert set(statuses) <= {201, 422}
    assert statuses[201] > 0 and statuses[422] > 0  # the limit was really tested
    for response in responses:
        if response.status == 422:
            assert (await response.json())["error"]["code"] == "exceeds_credits"
    accepted = [uuid.UUID(b["id"]) for b, r in zip(bodies, responses) if r.status == 201]
    logged = Counter(
        uuid.UUID(r["data"]["transfer_id"])
        for r in await db.fetch("SELECT data FROM events WHERE type = 'transfer_posted'")
    )
    assert all(logged[t] == 1 for t in accepted)
    assert not set(logged) - set(accepted) - await funding_transfers(db, accounts)
    await assert_log_matches_projections(db)
    for account in accounts:
        row = await db.fetchrow("SELECT * FROM balances WHERE account_id = $1", uuid.UUID(account["id"]))
        assert row["debits_posted"] + row["debits_pending"] <= row["credits_posted"]


async def funding_transfers(db, accounts):
    ids = [uuid.UUID(a["id"]) for a in accounts]
    rows = await db.fetch(
        "SELECT id FROM transfers WHERE credit_account_id = ANY($1) AND debit_account_id <> ALL($1)", ids
    )
    return {r["id"] for r in rows}


async def test_concurrent_duplicates_record_each_transfer_once(client, open_account, fund, db):
    accounts = await hot_accounts(open_account, fund)
    bodies = random_transfers(accounts, REQUESTS // 3, random.Random(11))
    sends = [b for b in bodies for _ in range(3)]
    random.Random(3).shuffle(sends)
    responses = await asyncio.gather(*(client.post("/v1/transfers", json=b) for b in sends))
    by_id: dict[str, list[int]] = {}
    for body, response in zip(sends, responses):
        by_id.setdefault(body["id"], []).append(response.status)
        if response.status == 200:
            assert response.headers["Idempotent-Replayed"] == "true"
    # A copy refused for lack of funds may be followed by one accepted after
    # other transfers brought funds in; but only one copy is ever created.
    for transfer_id, statuses in by_id.items():
        assert statuses.count(201) <= 1, (transfer_id, statuses)
        assert 200 not in statuses or 201 in statuses, (transfer_id, statuses)
        assert set(statuses) <= {200, 201, 422}
    assert any(200 in s for s in by_id.values())
    created = sum(1 for s in by_id.values() if 201 in s)
    assert await db.fetchval("SELECT count(*) FROM transfers") == created + HOT
    await assert_log_matches_projections(db)


async def test_same_id_with_different_fields_at_once_gives_one_transfer_and_409s(client, open_account, db):
    a, b = await open_account(), await open_account()
    body = transfer_body(a, b, "1.00")
    variants = [{**body, "amount": f"{n}.00"} for n in range(1, 21)]
    responses = await asyncio.gather(*(client.post("/v1/transfers", json=v) for v in variants))
    statuses = Counter(r.status for r in responses)
    assert statuses == {201: 1, 409: 19}
    for response in responses:
        if response.status == 409:
            assert (await response.json())["error"]["code"] == "exists_with_different_fields"
    assert await db.fetchval("SELECT count(*) FROM transfers") == 1
    await assert_log_matches_projections(db)


async def test_concurrent_posts_and_voids_of_one_pending_transfer_make_one_decision(client, open_account, db):
    a, b = await open_account(), await open_account()
    held = await (await client.post("/v1/transfers", json=transfer_body(a, b, "9.00", pending=True))).json()
    decisions = ["post", "void"] * 20
    random.Random(3).shuffle(decisions)
    responses = await asyncio.gather(*(client.post(f"/v1/transfers/{held['id']}/{d}") for d in decisions))
    stored = await (await client.get(f"/v1/transfers/{held['id']}")).json()
    winner = "post" if stored["status"] == "posted" else "void"
    loser_code = "transfer_already_posted" if winner == "post" else "transfer_already_voided"
    fresh = 0
    for decision, response in zip(decisions, responses):
        if decision == winner:
            assert response.status == 200
            fresh += "Idempotent-Replayed" not in response.headers
        else:
            assert (response.status, (await response.json())["error"]["code"]) == (409, loser_code)
    assert fresh == 1
    decided = await db.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND type LIKE 'pending_transfer_%'", uuid.UUID(held["id"])
    )
    assert decided == 1
    await assert_log_matches_projections(db)
