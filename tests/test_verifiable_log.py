"""The verifiable log: every event line carries its metadata and its chain
hash, and anyone can rebuild the chain from the lines as served, with
nothing but a JSON parser and SHA-256 (docs/api.md, "Verifiable log")."""

import hashlib
import json
import uuid

from tests.conftest import canonical_bytes, transfer_body


async def served_events(client) -> list[dict]:
    response = await client.get("/v1/events", params={"after_seq": "0"})
    assert response.status == 200
    return [json.loads(line) for line in (await response.text()).splitlines() if line]


async def test_every_event_line_carries_its_metadata_and_hash(client, open_account, db):
    a, b = await open_account(), await open_account()
    await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"), headers={"X-Request-ID": "req-42"})

    lines = await served_events(client)

    assert lines[-1]["metadata"] == {"request_id": "req-42"}
    stored = await db.fetchval("SELECT hash FROM events WHERE seq = $1", lines[-1]["seq"])
    assert lines[-1]["hash"] == stored.hex()


async def test_the_chain_rebuilds_from_the_served_lines_with_json_and_hashlib(client, open_account, db):
    awkward = {
        "ünïcødé": "naïve café ☕",
        "nested": {"z": [1, "2.5", None, True], "a": {"ß": "\\"}},
        "n": -7,
        "big": 2**53 - 1,
    }
    a = await open_account(metadata=awkward)
    b = await open_account()
    paid = transfer_body(a, b, "12.34", code="tab\there", metadata=awkward)
    await client.post("/v1/transfers", json=paid)
    held = await (await client.post("/v1/transfers", json=transfer_body(b, a, "5.00", pending=True))).json()
    await client.post(f"/v1/transfers/{held['id']}/post", json={"amount": "2.00"})
    await client.post(f"/v1/transfers/{paid['id']}/reverse", json={"id": str(uuid.uuid4()), "amount": "0.34"})
    await client.post(f"/v1/accounts/{b['id']}/close")

    lines = await served_events(client)

    previous = bytes(32)  # before the first event
    for line in lines:
        previous = hashlib.sha256(previous + canonical_bytes(line)).digest()
        assert previous.hex() == line["hash"], line["seq"]
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert previous == await db.fetchval("SELECT hash FROM ledger_head")


async def test_an_edited_event_no_longer_matches_its_served_hash(client, open_account, db):
    a, b = await open_account(), await open_account()
    await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))
    [*_, line] = await served_events(client)

    line["data"]["amount"] = "100.00"

    previous = bytes.fromhex((await served_events(client))[-2]["hash"])
    assert hashlib.sha256(previous + canonical_bytes(line)).hexdigest() != line["hash"]
