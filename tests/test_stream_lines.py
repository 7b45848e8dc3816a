"""The lines of /v1/events and /v1/accounts/{id}/entries, which PostgreSQL
builds, are byte for byte what the response structs (EventLine, EntryLine)
encode to: the reference encoder below is the service's former Python path,
kept here so that the lines cannot change shape."""

import asyncio
import io
import uuid

import msgspec
import pytest

from ledger.api.responses import EntryLine, EventLine, balance_out
from ledger.domain import money
from ledger.domain.chain import format_timestamp
from ledger.store.export import export
from ledger.store.head import NOTIFY_CHANNEL
from ledger.store.rows import balance_from_row
from tests.conftest import transfer_body

_encoder = msgspec.json.Encoder()

AWKWARD = {
    "ünïcødé": "naïve café ☕ 𝄞",
    "quote": 'say "hi"',
    "back\\slash": "a\\b",
    "control": "tab\there\nnew line\u0001",
    "nested": {"z": [1, "2.5", None, True, {"deep": ["x", {}]}], "a": {"ß": "\\"}},
    "n": -7,
    "big": 2**53 - 1,
}


async def reference_event_lines(db, after_seq: int = 0, limit: int | None = None) -> bytes:
    rows = await db.fetch(
        "SELECT seq, type, stream_id, data::text AS data, metadata::text AS metadata, recorded_at, hash"
        " FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
        after_seq,
        limit,
    )
    return b"".join(
        _encoder.encode(
            EventLine(
                seq=row["seq"],
                type=row["type"],
                stream_id=row["stream_id"],
                data=msgspec.Raw(row["data"]),
                metadata=msgspec.Raw(row["metadata"]),
                recorded_at=format_timestamp(row["recorded_at"]),
                hash=row["hash"].hex(),
            )
        )
        + b"\n"
        for row in rows
    )


async def reference_entry_lines(db, account_id: uuid.UUID, after_seq: int = 0, limit: int | None = None) -> bytes:
    scale = await db.fetchval("SELECT scale FROM accounts WHERE id = $1", account_id)
    rows = await db.fetch(
        "SELECT seq, transfer_id, type, side, amount, debits_posted, credits_posted,"
        " debits_pending, credits_pending, recorded_at"
        " FROM entries WHERE account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        account_id,
        after_seq,
        limit,
    )
    return b"".join(
        _encoder.encode(
            EntryLine(
                seq=row["seq"],
                transfer_id=row["transfer_id"],
                type=row["type"],
                side=row["side"],
                amount=money.format_amount(row["amount"], scale),
                balance=balance_out(balance_from_row(row), scale),
                recorded_at=format_timestamp(row["recorded_at"]),
            )
        )
        + b"\n"
        for row in rows
    )


async def served(client, path: str, **params: str) -> bytes:
    response = await client.get(path, params=params)
    assert response.status == 200, await response.text()
    assert response.content_type == "application/x-ndjson"
    return await response.read()


@pytest.fixture
async def expired(db):
    """``expired(seq)``: wait until an append after ``seq`` has committed."""
    seen: asyncio.Queue[int] = asyncio.Queue()

    def notified(conn, pid, channel, payload):
        seen.put_nowait(int(payload))

    async def wait(after: int) -> None:
        while await asyncio.wait_for(seen.get(), timeout=10) <= after:
            pass

    await db.add_listener(NOTIFY_CHANNEL, notified)
    yield wait
    await db.remove_listener(NOTIFY_CHANNEL, notified)


@pytest.fixture
async def varied(client, open_account, clock, expired):
    """Accounts at scales 0, 2, 8 and 18 moved by every kind of event:
    posted, pending then posted in part, voided, expired, reversed, closed;
    with unicode, nested metadata, and awkward text in codes and request ids."""
    accounts = []
    for scale, big, small in ((0, "98765432109876543210", "7"), (2, "123456.78", "0.05"), (8, "1.5", "0.00000001")):
        a = await open_account(f"C{scale}", scale, metadata=AWKWARD)
        b = await open_account(f"C{scale}", scale, flags={"debits_must_not_exceed_credits": True})
        accounts += [a, b]
        paid = transfer_body(a, b, big, code='c"\\\t', metadata=AWKWARD)
        assert (await client.post("/v1/transfers", json=paid, headers={"X-Request-ID": 'r"1\\x'})).status == 201
        held = transfer_body(b, a, small, pending=True)
        assert (await client.post("/v1/transfers", json=held)).status == 201
        assert (await client.post(f"/v1/transfers/{held['id']}/post", json={"amount": small})).status == 200
        voided = transfer_body(b, a, small, pending=True)
        assert (await client.post("/v1/transfers", json=voided)).status == 201
        assert (await client.post(f"/v1/transfers/{voided['id']}/void")).status == 200
        reversal = {"id": str(uuid.uuid4()), "amount": small}
        assert (await client.post(f"/v1/transfers/{paid['id']}/reverse", json=reversal)).status == 201
    # 38 digits, 18 of them after the point.
    wide = [await open_account("WIDE", 18) for _ in range(2)]
    accounts += wide
    amount = "12345678901234567890.123456789012345678"
    assert (await client.post("/v1/transfers", json=transfer_body(*wide, amount))).status == 201
    timed = await client.post("/v1/transfers", json=transfer_body(*wide, "0.5", pending=True, timeout_seconds=1))
    assert timed.status == 201
    clock.advance(2)
    await expired((await timed.json())["seq"])
    closed = await open_account("C2", 2)
    assert (await client.post(f"/v1/accounts/{closed['id']}/close")).status == 200
    return accounts + [closed]


async def test_event_lines_are_the_encoders_bytes(client, db, varied):
    body = await served(client, "/v1/events")
    assert body == await reference_event_lines(db)
    types = {msgspec.json.decode(line)["type"] for line in body.splitlines()}
    assert types == {
        "account_created",
        "account_closed",
        "transfer_posted",
        "transfer_pending",
        "transfer_reversed",
        "pending_transfer_posted",
        "pending_transfer_voided",
        "pending_transfer_expired",
    }


async def test_event_lines_after_a_seq_and_up_to_a_limit_are_the_encoders_bytes(client, db, varied):
    assert await served(client, "/v1/events", after_seq="7", limit="5") == await reference_event_lines(db, 7, 5)
    head = await db.fetchval("SELECT seq FROM ledger_head")
    assert await served(client, "/v1/events", after_seq=str(head)) == b""


async def test_entry_lines_are_the_encoders_bytes_at_each_scale(client, db, varied):
    for account in varied:
        account_id = uuid.UUID(account["id"])
        body = await served(client, f"/v1/accounts/{account_id}/entries")
        assert body == await reference_entry_lines(db, account_id), account["scale"]
    busy = uuid.UUID(varied[0]["id"])
    first, *_ = (await reference_entry_lines(db, busy)).splitlines()
    after = str(msgspec.json.decode(first)["seq"])
    paged = await served(client, f"/v1/accounts/{busy}/entries", after_seq=after, limit="2")
    assert paged == await reference_entry_lines(db, busy, int(after), 2)


async def test_an_export_writes_the_event_lines_bytes(db, varied):
    out = io.BytesIO()
    count = await export(db, out, after_seq=3)
    assert out.getvalue() == await reference_event_lines(db, 3)
    assert count == out.getvalue().count(b"\n")


async def test_lines_of_many_chunks_full_of_backslashes_are_the_encoders_bytes(client, db, open_account):
    a, b = await open_account(), await open_account()
    batch = [transfer_body(a, b, "1.00", metadata={"\\": "\\" * (n % 300), '\\"': "\\n"}) for n in range(4000)]
    assert (await client.post("/v1/transfer-batches", json={"transfers": batch})).status == 200
    body = await served(client, "/v1/events")
    assert len(body) > 1 << 20 and body.count(b"\\") > 1 << 20
    assert body == await reference_event_lines(db)
    out = io.BytesIO()
    await export(db, out)
    assert out.getvalue() == body
