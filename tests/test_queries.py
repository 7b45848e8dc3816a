"""Finding transfers and accounts: GET /v1/transfers and GET /v1/accounts
with every filter of API.md, keyset pages behind an opaque cursor bound to
its filters, each filter a user pages through served by an index."""

import asyncio
import base64
import hashlib
import re
import uuid
from datetime import timedelta

import pytest

from alembic import command
from ledger.store import migrations
from ledger.store.queries import AccountFilter, TransferFilter, accounts_page_query, transfers_page_query
from tests.conftest import transfer_body

#: What the cursors of a query with no filters are bound to (the cursor is
#: opaque to clients; a test that forges one must know what it holds).
NO_FILTERS = hashlib.sha256(b"[]").hexdigest()[:32].encode()


@pytest.fixture
async def shop(client, open_account, clock):
    """Three accounts; transfers between them made a minute apart, with codes,
    metadata, holds (one voided) and a reversal. The transfers, in order."""
    a, b, c = [await open_account() for _ in range(3)]
    made = []

    async def make(debit, credit, amount, **fields):
        response = await client.post("/v1/transfers", json=transfer_body(debit, credit, amount, **fields))
        assert response.status == 201, await response.text()
        made.append(await response.json())
        clock.offset += timedelta(minutes=1)
        return made[-1]

    await make(a, b, "1.00", code="sale", metadata={"order": "o-1", "channel": "web"})
    await make(b, c, "2.00", code="payout")
    await make(c, a, "3.00", code="sale", metadata={"order": "o-2", "channel": "web"})
    held = await make(a, c, "4.00", pending=True)
    voided = await make(b, a, "5.00", pending=True, metadata={"channel": "shop"})
    await client.post(f"/v1/transfers/{voided['id']}/void")
    reversal = await client.post(
        f"/v1/transfers/{made[0]['id']}/reverse", json={"id": str(uuid.uuid4()), "amount": "0.50"}
    )
    assert reversal.status == 201
    made.append(await reversal.json())
    return {"accounts": (a, b, c), "transfers": made, "held": held, "voided": voided}


async def find(client, path="/v1/transfers", **params) -> list[dict]:
    """Every page of a query, followed by its cursors; the items in order."""
    items, cursor = [], None
    key = "transfers" if path == "/v1/transfers" else "accounts"
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query)
        assert response.status == 200, await response.text()
        page = await response.json()
        items += page[key]
        cursor = page["next"]
        if cursor is None:
            return items


def ids(transfers) -> list[str]:
    return [t["id"] for t in transfers]


async def test_without_filters_every_transfer_comes_in_the_order_it_was_created(client, shop):
    assert ids(await find(client)) == ids(shop["transfers"])


async def test_newest_first_is_the_same_transfers_reversed(client, shop):
    assert ids(await find(client, order="desc", limit="2")) == ids(reversed(shop["transfers"]))


async def test_pages_of_any_size_put_together_are_the_whole_answer(client, shop):
    for limit in ("1", "2", "5", "1000"):
        assert ids(await find(client, limit=limit)) == ids(shop["transfers"])


async def test_a_full_page_that_ends_the_answer_has_no_next(client, shop):
    response = await client.get("/v1/transfers", params={"limit": str(len(shop["transfers"]))})
    assert (await response.json())["next"] is None


async def test_account_id_matches_either_side_and_the_sides_one_side(client, shop):
    a = shop["accounts"][0]["id"]
    transfers = shop["transfers"]
    either = [t for t in transfers if a in (t["debit_account_id"], t["credit_account_id"])]

    assert ids(await find(client, account_id=a, limit="2")) == ids(either)
    assert ids(await find(client, debit_account_id=a)) == ids(t for t in transfers if t["debit_account_id"] == a)
    assert ids(await find(client, credit_account_id=a)) == ids(t for t in transfers if t["credit_account_id"] == a)
    assert ids(await find(client, account_id=a, order="desc", limit="1")) == ids(reversed(either))


async def test_code_currency_and_status_match_exactly(client, shop):
    transfers = shop["transfers"]
    assert ids(await find(client, code="sale")) == ids(t for t in transfers if t["code"] == "sale")
    assert ids(await find(client, status="pending")) == [shop["held"]["id"]]
    assert ids(await find(client, status="voided")) == [shop["voided"]["id"]]
    assert ids(await find(client, currency="USD")) == ids(transfers)
    assert await find(client, currency="EUR") == []


async def test_created_from_is_inclusive_and_created_to_exclusive(client, shop):
    transfers = shop["transfers"]
    second, fourth = transfers[1]["created_at"], transfers[3]["created_at"]

    found = await find(client, created_from=second, created_to=fourth)

    assert ids(found) == ids(transfers[1:3])


async def test_a_bound_finer_than_a_microsecond_keeps_its_meaning(client, shop):
    transfer = shop["transfers"][1]
    at = transfer["created_at"].removesuffix("Z")
    just_after = f"{at}1Z"  # a tenth of a microsecond later (created_at has six fractional digits)

    assert transfer["id"] not in ids(await find(client, created_from=just_after))
    assert transfer["id"] in ids(await find(client, created_to=just_after))


async def test_metadata_filters_match_top_level_string_values_all_of_them(client, shop):
    transfers = shop["transfers"]
    web = [t for t in transfers if t["metadata"].get("channel") == "web"]

    assert ids(await find(client, **{"metadata.channel": "web"})) == ids(web)
    assert ids(await find(client, **{"metadata.channel": "web", "metadata.order": "o-2"})) == [transfers[2]["id"]]
    assert await find(client, **{"metadata.channel": "nowhere"}) == []


async def test_reverses_finds_the_reversals_of_a_transfer(client, shop):
    original, reversal = shop["transfers"][0], shop["transfers"][-1]
    assert ids(await find(client, reverses=original["id"])) == [reversal["id"]]
    found = (await find(client, reverses=original["id"]))[0]
    assert found["reverses"] == original["id"]


async def test_filters_combine(client, shop):
    a = shop["accounts"][0]["id"]
    found = await find(client, account_id=a, code="sale", **{"metadata.channel": "web"})
    assert ids(found) == ids(shop["transfers"][i] for i in (0, 2))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"acount_id": str(uuid.uuid4())}, "acount_id"),
        ({"account_id": "not-a-uuid"}, "account_id"),
        ({"created_from": "yesterday"}, "created_from"),
        ({"created_from": "2026-12-03T10:00:00"}, "created_from"),  # no offset
        ({"status": "lost"}, "status"),
        ({"order": "sideways"}, "order"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"metadata.": "x"}, "metadata."),
        ({"metadata.a\x00": "1"}, "metadata.a\x00"),
        ({"code": "card\x00"}, "code"),
        ({"created_to": "9999-12-31T23:30:00-01:00"}, "created_to"),  # year 10000 in UTC
        ({"created_from": "0001-01-01T00:30:00+01:00"}, "created_from"),  # year 0 in UTC
        # A cursor of this service's making, but for a seq past any the log can hold.
        ({"cursor": base64.urlsafe_b64encode(b'[1000000000000000000000,"%s"]' % NO_FILTERS).decode()}, "cursor"),
    ],
)
async def test_a_bad_parameter_is_refused_naming_it(client, params, field):
    response = await client.get("/v1/transfers", params=params)

    assert response.status == 422
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == ("invalid_field", field)
    assert "other filters" not in error["message"]  # a cursor refused as a cursor, not for its filters


async def test_a_parameter_given_twice_is_refused(client):
    response = await client.get("/v1/transfers?code=a&code=b")
    error = (await response.json())["error"]
    assert (response.status, error["code"], error["field"]) == (422, "invalid_field", "code")


async def test_a_cursor_reused_with_other_filters_is_refused(client, shop):
    page = await (await client.get("/v1/transfers", params={"code": "sale", "limit": "1"})).json()
    assert page["next"] is not None

    for other in ({"code": "payout"}, {"code": "sale", "order": "desc"}, {}):
        response = await client.get("/v1/transfers", params={**other, "cursor": page["next"], "limit": "1"})
        error = (await response.json())["error"]
        assert (response.status, error["field"]) == (422, "cursor")


async def test_accounts_filter_by_closed_and_metadata(client, open_account):
    vip = await open_account(metadata={"tier": "vip"})
    other = await open_account(metadata={"tier": "basic"})
    closed = await open_account(metadata={"tier": "vip"})
    assert (await client.post(f"/v1/accounts/{closed['id']}/close")).status == 200

    assert ids(await find(client, "/v1/accounts", **{"metadata.tier": "vip"})) == sorted([vip["id"], closed["id"]])
    assert ids(await find(client, "/v1/accounts", closed="true")) == [closed["id"]]
    open_ones = await find(client, "/v1/accounts", closed="false", **{"metadata.tier": "vip"})
    assert ids(open_ones) == [vip["id"]]
    assert other["id"] in ids(await find(client, "/v1/accounts", closed="false"))


@pytest.mark.parametrize("closed", ["perhaps", "1", "TRUE"])
async def test_accounts_refuse_a_closed_filter_other_than_true_or_false(client, closed):
    response = await client.get("/v1/accounts", params={"closed": closed})
    error = (await response.json())["error"]
    assert (response.status, error["field"]) == (422, "closed")


async def plan(db, query: str, arguments: list) -> str:
    """PostgreSQL's plan for ``query``, sequential scans priced out so that
    the plan shows whether an index can serve it at all (the test ledger is
    too small for the planner to prefer one)."""
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        rows = await db.fetch(f"EXPLAIN {query}", *arguments)
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("side", ["account_id", "debit_account_id", "credit_account_id"])
async def test_a_page_of_one_accounts_transfers_is_a_range_of_its_entries(db, shop, side):
    account = uuid.UUID(shop["accounts"][0]["id"])
    query, arguments = transfers_page_query(TransferFilter(**{side: account}), after_seq=3, descending=False, limit=101)

    explained = await plan(db, query, arguments)

    # The account's entries read in seq order from their key, never sorted.
    assert "entries_pkey" in explained and not re.search(r"\bSort  \(", explained)


async def test_a_metadata_filter_reads_the_gin_index(db, shop):
    metadata = {"channel": "web"}
    query, arguments = transfers_page_query(
        TransferFilter(metadata=metadata), after_seq=None, descending=False, limit=101
    )
    explained = await plan(db, query, arguments)
    assert "transfers_metadata" in explained

    query, arguments = accounts_page_query(AccountFilter(metadata=metadata), after=None, limit=101)
    explained = await plan(db, query, arguments)
    assert "accounts_metadata" in explained


async def test_the_query_migrations_apply_to_a_ledger_that_holds_data(client, database_url, db, shop):
    config = migrations.alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0006")
    assert await db.fetchval("SELECT to_regclass('transfers_metadata')") is None

    await asyncio.to_thread(command.upgrade, config, "head")

    transfers = await find(client, **{"metadata.channel": "web"})
    assert [t["reversed_amount"] for t in transfers] == ["0.00", "0.00"]  # its reversal was undone with 0007
    assert await db.fetchval("SELECT count(*) FROM transfers WHERE reverses IS NOT NULL") == 0


@pytest.mark.parametrize("value", ["0.5", "1733220000", "2026-12-03", "2026-12-03T10:00:00+0100"])
async def test_created_from_and_to_take_only_rfc_3339_instants(client, value):
    for name in ("created_from", "created_to"):
        response = await client.get("/v1/transfers", params={name: value})
        error = (await response.json())["error"]
        assert (response.status, error["code"], error["field"]) == (422, "invalid_field", name)
