"""Opening, reading and listing accounts."""

import uuid

import msgspec

from tests.conftest import ledger_snapshot


async def test_open_account_applies_documented_defaults(client):
    response = await client.post("/v1/accounts", json={"currency": "USD", "scale": 2})
    assert response.status == 201
    account = await response.json()
    assert uuid.UUID(account["id"])
    assert account["flags"] == {"debits_must_not_exceed_credits": False, "credits_must_not_exceed_debits": False}
    assert account["metadata"] == {}
    assert account["closed"] is False
    assert account["balance"] == {
        "debits_posted": "0.00",
        "credits_posted": "0.00",
        "debits_pending": "0.00",
        "credits_pending": "0.00",
    }
    assert account["created_at"].endswith("Z")


async def test_get_account_returns_what_was_opened(client, open_account):
    opened = await open_account("EUR", 3, metadata={"owner": "cust_42"})
    response = await client.get(f"/v1/accounts/{opened['id']}")
    assert response.status == 200
    assert await response.json() == opened


async def test_same_id_same_fields_is_an_idempotent_replay(client, db):
    body = {"id": str(uuid.uuid4()), "currency": "USD", "scale": 2, "metadata": {"a": 1}}
    first = await client.post("/v1/accounts", json=body)
    second = await client.post("/v1/accounts", json=body)
    assert (first.status, second.status) == (201, 200)
    assert await first.json() == await second.json()
    assert await db.fetchval("SELECT count(*) FROM events") == 1


async def test_same_id_different_fields_is_409_and_changes_nothing(client, db):
    account_id = str(uuid.uuid4())
    await client.post("/v1/accounts", json={"id": account_id, "currency": "USD", "scale": 2})
    before = await ledger_snapshot(db)
    response = await client.post("/v1/accounts", json={"id": account_id, "currency": "USD", "scale": 3})
    assert response.status == 409
    error = (await response.json())["error"]
    assert error["code"] == "exists_with_different_fields"
    assert "scale" in error["message"]
    assert await ledger_snapshot(db) == before


async def test_same_id_with_metadata_false_then_0_is_409(client, db):
    body = {"id": str(uuid.uuid4()), "currency": "USD", "scale": 2, "metadata": {"vip": False}}
    await client.post("/v1/accounts", json=body)

    response = await client.post("/v1/accounts", json={**body, "metadata": {"vip": 0}})

    assert response.status == 409
    assert (await response.json())["error"]["code"] == "exists_with_different_fields"


async def test_an_account_id_in_the_path_is_spelled_as_a_body_spells_it_not_as_a_urn(client, open_account):
    account = await open_account()

    response = await client.get(f"/v1/accounts/urn:uuid:{account['id']}")

    assert response.status == 422
    assert (await response.json())["error"]["field"] == "id"


async def test_an_account_id_in_the_path_may_be_in_capitals_or_without_hyphens(client, open_account):
    account = await open_account()

    for spelled in (account["id"].upper(), account["id"].replace("-", "")):
        assert (await client.get(f"/v1/accounts/{spelled}")).status == 200


async def test_unknown_account_is_404(client):
    response = await client.get(f"/v1/accounts/{uuid.uuid4()}")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "account_not_found"


async def test_list_accounts_pages_by_id_and_filters_by_currency(client, open_account):
    usd = sorted([(await open_account("USD"))["id"] for _ in range(5)])
    await open_account("EUR")
    seen, after = [], None
    while True:
        query = {"currency": "USD", "limit": "2", **({"after": after} if after else {})}
        page = await (await client.get("/v1/accounts", params=query)).json()
        seen += [a["id"] for a in page["accounts"]]
        after = page["next"]
        if after is None:
            break
    assert seen == usd


async def test_list_accounts_refuses_unknown_parameters(client):
    response = await client.get("/v1/accounts", params={"limt": "5"})
    assert response.status == 422
    assert (await response.json())["error"] == {
        "code": "invalid_field",
        "message": "Object contains unknown field `limt`",
        "field": "limt",
    }


async def test_messagepack_in_and_out(client):
    response = await client.post(
        "/v1/accounts",
        data=msgspec.msgpack.encode({"currency": "JPY", "scale": 0}),
        headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
    )
    assert response.status == 201
    assert response.content_type == "application/msgpack"
    account = msgspec.msgpack.decode(await response.read())
    assert account["currency"] == "JPY"
    assert account["balance"]["debits_posted"] == "0"
