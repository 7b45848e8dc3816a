"""Bad input of every kind gets its documented error and changes nothing."""

import asyncio
import json
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
import msgspec
import pytest

from ledger.api.app import create_app
from ledger.config import Settings
from tests.conftest import ledger_snapshot, transfer_body
from tests.test_metrics import Scrape

MISSING = str(uuid.uuid4())


@pytest.fixture
async def accounts(open_account):
    return {
        "a": await open_account("USD", 2),
        "b": await open_account("USD", 2),
        "eur": await open_account("EUR", 2),
        "usd3": await open_account("USD", 3),
    }


def transfer(**override):
    """A transfer from a to b, with fields replaced (or removed, with None-valued `drop`)."""

    def build(acc):
        body = transfer_body(acc["a"], acc["b"], "1.00")
        body.update(override)
        return {"json": body}

    return build


def raw(data: bytes, content_type: str = "application/json"):
    return lambda acc: {"data": data, "headers": {"Content-Type": content_type}}


def account(**fields):
    return lambda acc: {"json": {"currency": "USD", "scale": 2, **fields}}


def msgpack_transfer(**override):
    """A transfer from a to b in MessagePack, which can carry values JSON has no word for."""

    def build(acc):
        body = {**transfer_body(acc["a"], acc["b"], "1.00"), **override}
        return {"data": msgspec.msgpack.encode(body), "headers": {"Content-Type": "application/msgpack"}}

    return build


def encoded(coding: str):
    """An account body, plain, declared as in the content coding ``coding``."""
    return lambda acc: {
        "data": b'{"currency": "USD", "scale": 2}',
        "headers": {"Content-Type": "application/json", "Content-Encoding": coding},
    }


def given_twice(key: str, first, last, body=None):
    """A JSON body (a transfer from a to b, unless ``body`` builds another)
    that gives ``key`` twice: ``first``, then ``last``."""

    def build(acc):
        fields = body(acc) if body else transfer_body(acc["a"], acc["b"], "1.00")
        fields.pop(key, None)
        members = [
            f"{json.dumps(key)}: {json.dumps(first)}",
            json.dumps(fields)[1:-1],
            f"{json.dumps(key)}: {json.dumps(last)}",
        ]
        return {"data": ("{" + ", ".join(members) + "}").encode(), "headers": {"Content-Type": "application/json"}}

    return build


def msgpack_given_twice(key: str, first, last):
    """A transfer from a to b in MessagePack, its map giving ``key`` twice."""

    def build(acc):
        fields = {k: v for k, v in transfer_body(acc["a"], acc["b"], "1.00").items() if k != key}
        pairs = [(key, first), *fields.items(), (key, last)]
        data = bytes([0x80 | len(pairs)]) + b"".join(
            msgspec.msgpack.encode(k) + msgspec.msgpack.encode(v) for k, v in pairs
        )
        return {"data": data, "headers": {"Content-Type": "application/msgpack"}}

    return build


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


# (method, path, request, status, code, field)
CASES = {
    "float amount": ("POST", "/v1/transfers", transfer(amount=12.5), 422, "invalid_field", "amount"),
    "integer amount": ("POST", "/v1/transfers", transfer(amount=12), 422, "invalid_field", "amount"),
    "exponent amount": ("POST", "/v1/transfers", transfer(amount="1e3"), 422, "invalid_field", "amount"),
    "NaN amount": ("POST", "/v1/transfers", transfer(amount="NaN"), 422, "invalid_field", "amount"),
    "39-digit amount": ("POST", "/v1/transfers", transfer(amount="1" * 37 + ".00"), 422, "invalid_field", "amount"),
    "negative amount": ("POST", "/v1/transfers", transfer(amount="-5.00"), 422, "amount_must_be_positive", None),
    "zero amount": ("POST", "/v1/transfers", transfer(amount="0.00"), 422, "amount_must_be_positive", None),
    "too many decimals": ("POST", "/v1/transfers", transfer(amount="1.001"), 422, "amount_scale_exceeded", None),
    "unknown debit account": (
        "POST",
        "/v1/transfers",
        transfer(debit_account_id=MISSING),
        422,
        "debit_account_not_found",
        None,
    ),
    "unknown credit account": (
        "POST",
        "/v1/transfers",
        transfer(credit_account_id=MISSING),
        422,
        "credit_account_not_found",
        None,
    ),
    "same account both sides": (
        "POST",
        "/v1/transfers",
        lambda acc: {"json": transfer_body(acc["a"], acc["a"], "1.00")},
        422,
        "accounts_must_be_different",
        None,
    ),
    "currency differs from accounts": (
        "POST",
        "/v1/transfers",
        transfer(currency="EUR"),
        422,
        "currency_mismatch",
        None,
    ),
    "accounts in two currencies": (
        "POST",
        "/v1/transfers",
        lambda acc: {"json": transfer_body(acc["a"], acc["eur"], "1.00", currency="USD")},
        422,
        "currency_mismatch",
        None,
    ),
    "accounts with two scales": (
        "POST",
        "/v1/transfers",
        lambda acc: {"json": transfer_body(acc["a"], acc["usd3"], "1.00")},
        422,
        "currency_mismatch",
        None,
    ),
    "malformed JSON": ("POST", "/v1/transfers", raw(b'{"id": '), 400, "malformed_body", None),
    "malformed MessagePack": (
        "POST",
        "/v1/transfers",
        raw(b"\xc1\xc1", "application/msgpack"),
        400,
        "malformed_body",
        None,
    ),
    "wrong type": ("POST", "/v1/transfers", transfer(pending="yes"), 422, "invalid_field", "pending"),
    "unknown field": ("POST", "/v1/transfers", transfer(pendng=True), 422, "invalid_field", "pendng"),
    "missing field": (
        "POST",
        "/v1/transfers",
        lambda acc: {"json": {"id": str(uuid.uuid4())}},
        422,
        "invalid_field",
        "debit_account_id",
    ),
    "body not an object": ("POST", "/v1/transfers", raw(b"[1, 2]"), 422, "invalid_field", None),
    "id not a UUID": ("POST", "/v1/transfers", transfer(id="tx-1"), 422, "invalid_field", "id"),
    "account id not a UUID": (
        "POST",
        "/v1/transfers",
        transfer(credit_account_id="42"),
        422,
        "invalid_field",
        "credit_account_id",
    ),
    "path id not a UUID": ("GET", "/v1/accounts/not-a-uuid", lambda acc: {}, 422, "invalid_field", "id"),
    "transfer metadata over 1 KiB": (
        "POST",
        "/v1/transfers",
        transfer(metadata={"note": "x" * 1100}),
        422,
        "invalid_field",
        "metadata",
    ),
    "account metadata over 4 KiB": (
        "POST",
        "/v1/accounts",
        account(metadata={"note": "x" * 4100}),
        422,
        "invalid_field",
        "metadata",
    ),
    "NUL in metadata": (
        "POST",
        "/v1/transfers",
        transfer(metadata={"note": "a\x00b"}),
        422,
        "invalid_field",
        "metadata.note",
    ),
    "NUL in a metadata key": (
        "POST",
        "/v1/transfers",
        transfer(metadata={"a": {"b\x00": 1}}),
        422,
        "invalid_field",
        "metadata.a",
    ),
    "a MessagePack extension in metadata": (
        "POST",
        "/v1/transfers",
        msgpack_transfer(metadata={"x": msgspec.msgpack.Ext(1, b"")}),
        422,
        "invalid_field",
        "metadata.x",
    ),
    "MessagePack binary in metadata": (
        "POST",
        "/v1/transfers",
        msgpack_transfer(metadata={"x": [b"\x01"]}),
        422,
        "invalid_field",
        "metadata.x[0]",
    ),
    "a MessagePack timestamp in metadata": (
        "POST",
        "/v1/transfers",
        msgpack_transfer(metadata={"at": datetime(2026, 1, 1, tzinfo=UTC)}),
        422,
        "invalid_field",
        "metadata.at",
    ),
    "a MessagePack integer key in metadata": (
        "POST",
        "/v1/transfers",
        msgpack_transfer(metadata={"x": {1: "one"}}),
        422,
        "invalid_field",
        "metadata.x",
    ),
    "metadata nested 33 deep": (
        "POST",
        "/v1/transfers",
        transfer(metadata={"a": nested(32)}),
        422,
        "invalid_field",
        "metadata.a" + "[0]" * 31,
    ),
    "a body nested deeper than a decoder can go": (
        "POST",
        "/v1/accounts",
        raw(b'{"currency": "USD", "scale": 2, "metadata": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}"),
        400,
        "malformed_body",
        None,
    ),
    "a number out of range, in metadata": (
        "POST",
        "/v1/accounts",
        raw(b'{"currency": "USD", "scale": 2, "metadata": {"limits": {"daily": 1e400}}}'),
        422,
        "invalid_field",
        "metadata",
    ),
    "a fraction in metadata": (
        "POST",
        "/v1/transfers",
        transfer(metadata={"rate": 1.5}),
        422,
        "invalid_field",
        "metadata.rate",
    ),
    "an exponent in account metadata": (
        "POST",
        "/v1/accounts",
        raw(b'{"currency": "USD", "scale": 2, "metadata": {"limits": {"daily": 1e20}}}'),
        422,
        "invalid_field",
        "metadata.limits.daily",
    ),
    "an integer past 2**53 - 1 in metadata": (
        "POST",
        "/v1/transfers",
        transfer(metadata={"ids": [1, 2**53]}),
        422,
        "invalid_field",
        "metadata.ids[1]",
    ),
    "NUL in code": ("POST", "/v1/transfers", transfer(code="card\x00"), 422, "invalid_field", "code"),
    "a code of 256 bytes in 64 characters": (
        "POST",
        "/v1/transfers",
        transfer(code="\N{GRINNING FACE}" * 64),
        422,
        "invalid_field",
        "code",
    ),
    "NUL in currency": ("POST", "/v1/accounts", account(currency="US\x00"), 422, "invalid_field", "currency"),
    "lower-case currency": ("POST", "/v1/accounts", account(currency="usd"), 422, "invalid_field", "currency"),
    "scale over 18": ("POST", "/v1/accounts", account(scale=19), 422, "invalid_field", "scale"),
    "negative scale": ("POST", "/v1/accounts", account(scale=-1), 422, "invalid_field", "scale"),
    "unknown flag": (
        "POST",
        "/v1/accounts",
        account(flags={"no_overdraft": True}),
        422,
        "invalid_field",
        "flags.no_overdraft",
    ),
    "timeout without pending": (
        "POST",
        "/v1/transfers",
        transfer(timeout_seconds=60),
        422,
        "invalid_field",
        "timeout_seconds",
    ),
    "timeout of zero": (
        "POST",
        "/v1/transfers",
        transfer(pending=True, timeout_seconds=0),
        422,
        "invalid_field",
        "timeout_seconds",
    ),
    "post of an unknown transfer": (
        "POST",
        f"/v1/transfers/{MISSING}/post",
        lambda acc: {},
        404,
        "transfer_not_found",
        None,
    ),
    "void of an unknown transfer": (
        "POST",
        f"/v1/transfers/{MISSING}/void",
        lambda acc: {},
        404,
        "transfer_not_found",
        None,
    ),
    "close of an unknown account": (
        "POST",
        f"/v1/accounts/{MISSING}/close",
        lambda acc: {},
        404,
        "account_not_found",
        None,
    ),
    "post path id not a UUID": ("POST", "/v1/transfers/tx-1/post", lambda acc: {}, 422, "invalid_field", "id"),
    "post amount as a number": (
        "POST",
        f"/v1/transfers/{MISSING}/post",
        lambda acc: {"json": {"amount": 5}},
        422,
        "invalid_field",
        "amount",
    ),
    "post with an unknown field": (
        "POST",
        f"/v1/transfers/{MISSING}/post",
        lambda acc: {"json": {"amout": "5.00"}},
        422,
        "invalid_field",
        "amout",
    ),
    "void with a field": (
        "POST",
        f"/v1/transfers/{MISSING}/void",
        lambda acc: {"json": {"amount": "5.00"}},
        422,
        "invalid_field",
        "amount",
    ),
    "batch item with an unknown action": (
        "POST",
        "/v1/transfer-batches",
        lambda acc: {"json": {"transfers": [{"action": "capture", "id": MISSING}]}},
        422,
        "invalid_field",
        "transfers[0].action",
    ),
    "batch post with a float amount": (
        "POST",
        "/v1/transfer-batches",
        lambda acc: {
            "json": {
                "transfers": [
                    transfer_body(acc["a"], acc["b"], "1.00"),
                    {"action": "post", "id": MISSING, "amount": 1.5},
                ]
            }
        },
        422,
        "invalid_field",
        "transfers[1].amount",
    ),
    "batch void with a transfer's field": (
        "POST",
        "/v1/transfer-batches",
        lambda acc: {"json": {"transfers": [{"action": "void", "id": MISSING, "currency": "USD"}]}},
        422,
        "invalid_field",
        "transfers[0].currency",
    ),
    "batch item not an object": (
        "POST",
        "/v1/transfer-batches",
        lambda acc: {"json": {"transfers": ["x"]}},
        422,
        "invalid_field",
        "transfers[0]",
    ),
    "batch of 8191": (
        "POST",
        "/v1/transfer-batches",
        lambda acc: {"json": {"transfers": [transfer_body(acc["a"], acc["b"], "1.00")] * 8191}},
        422,
        "invalid_field",
        "transfers",
    ),
    "empty batch": (
        "POST",
        "/v1/transfer-batches",
        lambda acc: {"json": {"transfers": []}},
        422,
        "invalid_field",
        "transfers",
    ),
    "form body": (
        "POST",
        "/v1/transfers",
        raw(b"amount=1", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
        None,
    ),
    "a content coding aiohttp does not undo": (
        "POST",
        "/v1/accounts",
        encoded("compress"),
        415,
        "unsupported_media_type",
        None,
    ),
    "an unknown content coding": ("POST", "/v1/accounts", encoded("foo"), 415, "unsupported_media_type", None),
    "a plain body declared gzip": ("POST", "/v1/accounts", encoded("gzip"), 400, "malformed_body", None),
    "a plain body declared deflate": ("POST", "/v1/accounts", encoded("deflate"), 400, "malformed_body", None),
    "an amount given twice": (
        "POST",
        "/v1/transfers",
        given_twice("amount", "1.00", "1000.00"),
        422,
        "invalid_field",
        "amount",
    ),
    "an id given twice": (
        "POST",
        "/v1/transfers",
        given_twice("id", str(uuid.uuid4()), str(uuid.uuid4())),
        422,
        "invalid_field",
        "id",
    ),
    "a metadata key given twice": (
        "POST",
        "/v1/transfers",
        lambda acc: {
            "data": json.dumps(transfer_body(acc["a"], acc["b"], "1.00"))[:-1].encode()
            + b', "metadata": {"k": 1, "k": 2}}',
            "headers": {"Content-Type": "application/json"},
        },
        422,
        "invalid_field",
        "k",
    ),
    # Read as the last value says, an atomic batch would be recorded in part.
    "atomic given twice in a batch": (
        "POST",
        "/v1/transfer-batches",
        given_twice(
            "atomic",
            True,
            False,
            body=lambda acc: {
                "transfers": [transfer_body(acc["a"], acc["b"], "1.00"), transfer_body(acc["a"], acc["eur"], "1.00")]
            },
        ),
        422,
        "invalid_field",
        "atomic",
    ),
    "a MessagePack key given twice": (
        "POST",
        "/v1/transfers",
        msgpack_given_twice("amount", "1.00", "700.00"),
        422,
        "invalid_field",
        "amount",
    ),
    "unknown endpoint": ("GET", "/v1/nothing-here", lambda acc: {}, 404, "not_found", None),
    "wrong method": ("DELETE", "/v1/transfers", lambda acc: {}, 405, "method_not_allowed", None),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_bad_request_is_refused_and_changes_nothing(client, db, accounts, case):
    method, path, build, status, code, field = case
    before = await ledger_snapshot(db)
    response = await client.request(method, path, **build(accounts))
    body = await response.json()
    assert response.status == status, body
    assert body["error"]["code"] == code
    assert body["error"].get("field") == field
    assert body["error"]["message"]
    assert await ledger_snapshot(db) == before


async def test_zeros_ending_an_amount_beyond_the_scale_are_not_digits_beyond_it(client, accounts):
    response = await client.post("/v1/transfers", json=transfer_body(accounts["a"], accounts["b"], "1.000"))
    assert response.status == 201, await response.text()
    assert (await response.json())["amount"] == "1.00"


async def test_colons_in_values_are_no_key_given_twice(client, accounts):
    body = transfer_body(
        accounts["a"], accounts["b"], "1.00", metadata={"at": "10:00:00", "url": "https://x.example/a:b"}
    )
    response = await client.post("/v1/transfers", json=body)
    assert response.status == 201, await response.text()


async def test_float_amount_message_says_amounts_are_strings(client, accounts):
    response = await client.post("/v1/transfers", json=transfer(amount=1.5)(accounts)["json"])
    assert "decimal strings" in (await response.json())["error"]["message"]


async def test_errors_are_encoded_as_the_caller_accepts(client):
    response = await client.get("/v1/nothing-here", headers={"Accept": "application/msgpack"})
    assert msgspec.msgpack.decode(await response.read())["error"]["code"] == "not_found"


async def test_body_over_the_size_limit_is_413(database_url, db, aiohttp_client):
    client = await aiohttp_client(create_app(Settings(database_url=database_url, max_body_bytes=2048)))
    before = await ledger_snapshot(db)
    response = await client.post("/v1/accounts", json={"currency": "USD", "scale": 2, "metadata": {"x": "y" * 3000}})
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "body_too_large"
    assert await ledger_snapshot(db) == before


async def test_metadata_may_nest_32_deep(client, accounts):
    body = transfer(metadata={"a": nested(31)})(accounts)["json"]

    response = await client.post("/v1/transfers", json=body)

    assert response.status == 201, await response.text()


async def test_a_code_may_be_255_bytes(client, accounts):
    code = "\N{GRINNING FACE}" * 63 + "abc"
    body = {**transfer()(accounts)["json"], "code": code}

    response = await client.post("/v1/transfers", json=body)

    assert (response.status, (await response.json())["code"]) == (201, code)


async def test_metadata_may_hold_the_text_of_a_json_escape(client, accounts):
    # A backslash and "u0000": six characters, none of them a NUL.
    body = transfer(metadata={"path": "C:\\u0000dir"})(accounts)["json"]

    response = await client.post("/v1/transfers", json=body)

    assert response.status == 201, await response.text()
    assert (await response.json())["metadata"] == {"path": "C:\\u0000dir"}


async def test_a_client_gone_before_its_body_ended_is_a_400_not_an_unreachable_database(service):
    # `ledger serve` itself: aiohttp's test server cancels the handler of a
    # request whose client went away, where the service lets it finish.
    served = await service()
    host, port = urlsplit(served.url).hostname, urlsplit(served.url).port
    _, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /v1/accounts HTTP/1.1\r\nHost: ledger\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"currency"'
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    route = {"method": "POST", "route": "/v1/accounts"}

    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        while True:  # until the service has answered it
            async with session.get(f"{served.url}/metrics") as response:
                metrics = Scrape(await response.text())
            if metrics("ledger_http_requests_total", **route, status="400") == 1:
                break

    assert metrics("ledger_http_requests_total", **route, status="503") == 0
    assert await served.stop() == 0, served.log
    assert "database unreachable" not in served.log
