"""``GET /openapi.json``: every route, described from the structs that carry its bodies."""

import json
import os
import subprocess
import sys
import uuid

import jsonschema_rs
import msgspec
import pytest
from aiohttp import web

from ledger.api.app import create_app
from ledger.api.openapi import Undocumented, document
from ledger.config import Settings
from tests.conftest import transfer_body

AMOUNT_FIELDS = {"amount", "posted_amount", "debits_posted", "credits_posted", "debits_pending", "credits_pending"}


@pytest.fixture
async def served(client):
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    return await response.json()


def routed(app: web.Application) -> set[tuple[str, str]]:
    return {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}


def documented(doc) -> set[tuple[str, str]]:
    return {(method, path) for path, operations in doc["paths"].items() for method in operations}


class Contract:
    """Checks a response against what the document says of its operation."""

    def __init__(self, doc) -> None:
        self.doc = doc

    async def check(self, method: str, path: str, response) -> None:
        operation = self.doc["paths"][path][method]
        assert str(response.status) in operation["responses"], f"{response.status} is not documented"
        content = operation["responses"][str(response.status)]["content"]
        assert response.content_type in content, f"{response.content_type} is not documented"
        schema = {**content[response.content_type]["schema"], "components": self.doc["components"]}
        text = await response.text()
        if response.content_type == "application/json":
            bodies = [json.loads(text)]
        elif response.content_type == "application/x-ndjson":
            bodies = [json.loads(line) for line in text.splitlines()]
        else:
            bodies = [text]
        assert bodies
        for body in bodies:
            jsonschema_rs.validate(schema, body)


def test_every_route_is_in_the_document_and_nothing_else():
    app = create_app(Settings())
    assert documented(document(app)) == routed(app)


def test_a_route_added_without_a_declaration_fails_the_document():
    app = create_app(Settings())

    async def handler(request):
        return web.Response()

    app.router.add_get("/v1/undocumented", handler)
    with pytest.raises(Undocumented, match="GET /v1/undocumented"):
        document(app)


def test_ledger_openapi_prints_the_served_document(served):
    printed = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "openapi"], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(printed.stdout) == served


async def test_the_document_is_messagepack_when_asked_for_as_every_endpoint_is(client, served):
    response = await client.get("/openapi.json", headers={"Accept": "application/msgpack"})
    assert response.content_type == "application/msgpack"
    assert msgspec.msgpack.decode(await response.read()) == served


def test_ledger_openapi_reads_no_setting(served):
    env = {**os.environ, "LEDGER_PORT": "not-a-port", "LEDGER_TOKENS": "malformed"}
    printed = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "openapi"], env=env, capture_output=True, text=True, timeout=60
    )
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == served


def test_the_document_is_openapi_3_1_with_every_component_it_refers_to(served):
    assert served["openapi"] == "3.1.0"
    refs = {ref.rsplit("/", 1)[1] for ref in _refs(served)}
    assert refs <= served["components"]["schemas"].keys()


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_amounts_are_strings_with_their_pattern(served):
    found = set()
    for name, schema in served["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            if field in AMOUNT_FIELDS:
                options = prop.get("anyOf", [prop])
                [string] = [o for o in options if o.get("type") == "string"]
                assert string["pattern"] == r"^-?[0-9]+(\.[0-9]+)?$", (name, field)
                found.add((name, field))
    assert {
        ("TransferIn", "amount"),
        ("PostIn", "amount"),
        ("TransferOut", "amount"),
        ("BalanceOut", "debits_posted"),
    } <= found


def test_a_transfer_lists_every_status_it_can_answer(served):
    responses = served["paths"]["/v1/transfers"]["post"]["responses"]
    assert set(responses) == {"200", "201", "400", "401", "403", "409", "413", "415", "422", "503"}
    assert "`exceeds_credits`" in responses["422"]["description"]
    assert set(responses["201"]["content"]) == {"application/json", "application/msgpack"}


def test_streams_are_ndjson_of_their_line_schema(served):
    for path, line in (("/v1/events", "EventLine"), ("/v1/accounts/{id}/entries", "EntryLine")):
        content = served["paths"][path]["get"]["responses"]["200"]["content"]
        assert content == {"application/x-ndjson": {"schema": {"$ref": f"#/components/schemas/{line}"}}}


async def test_what_the_service_answers_is_what_the_document_says(client, served, open_account):
    contract = Contract(served)
    a, b = await open_account(), await open_account()
    pending = transfer_body(a, b, "2.50", pending=True, timeout_seconds=60, code="rent", metadata={"k": "v"})
    calls = [
        ("post", "/v1/accounts", "/v1/accounts", {"json": {"currency": "EUR", "scale": 3}}),
        ("post", "/v1/transfers", "/v1/transfers", {"json": transfer_body(a, b, "1.00")}),
        ("post", "/v1/transfers", "/v1/transfers", {"json": pending}),
        ("post", "/v1/transfers", "/v1/transfers", {"json": pending}),  # a replay
        ("post", "/v1/transfers/{id}/post", f"/v1/transfers/{pending['id']}/post", {"json": {"amount": "1.25"}}),
        ("post", "/v1/transfers/{id}/void", f"/v1/transfers/{pending['id']}/void", {}),  # posted: 409
        ("get", "/v1/transfers/{id}", f"/v1/transfers/{pending['id']}", {}),
        ("get", "/v1/transfers/{id}", f"/v1/transfers/{uuid.uuid4()}", {}),
        ("post", "/v1/transfers", "/v1/transfers", {"json": {**transfer_body(a, b, "1"), "amount": 1}}),
        ("post", "/v1/transfers", "/v1/transfers", {"data": b"{", "headers": {"Content-Type": "application/json"}}),
        (
            "post",
            "/v1/transfer-batches",
            "/v1/transfer-batches",
            {"json": {"transfers": [transfer_body(a, b, "1.00"), transfer_body(a, a, "1.00")]}},
        ),
        (
            "post",
            "/v1/transfer-batches",
            "/v1/transfer-batches",
            {"json": {"transfers": [transfer_body(a, b, "1.00"), transfer_body(a, a, "1.00")], "atomic": True}},
        ),
        ("get", "/v1/accounts/{id}", f"/v1/accounts/{a['id']}", {}),
        ("get", "/v1/accounts", "/v1/accounts", {"params": {"limit": "1"}}),
        ("get", "/v1/accounts/{id}/balance", f"/v1/accounts/{a['id']}/balance", {}),
        ("get", "/v1/accounts/{id}/entries", f"/v1/accounts/{a['id']}/entries", {}),
        ("get", "/v1/events", "/v1/events", {}),
        ("post", "/v1/accounts/{id}/close", f"/v1/accounts/{b['id']}/close", {}),
        ("post", "/admin/v1/reconciliations", "/admin/v1/reconciliations", {}),
        ("get", "/health/live", "/health/live", {}),
        ("get", "/health/ready", "/health/ready", {}),
        ("get", "/metrics", "/metrics", {}),
    ]
    statuses = set()
    for method, template, path, options in calls:
        response = await client.request(method, path, **options)
        await contract.check(method, template, response)
        statuses.add(response.status)
    assert {200, 201, 400, 404, 409, 422} <= statuses


@pytest.mark.parametrize(
    "path, query",
    [
        ("/v1/events", "limit=null"),
        ("/v1/accounts", "after=null"),
        ("/v1/accounts", "currency=null"),
        ("/v1/events", "after_seq=9223372036854775808"),
        ("/v1/events", "limit=9223372036854775808"),
    ],
)
async def test_a_query_parameter_out_of_its_schema_is_422_before_anything_is_sent(client, path, query):
    response = await client.get(f"{path}?{query}")
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "invalid_field"


async def test_as_of_seq_null_is_422(client, open_account):
    account = await open_account()
    response = await client.get(f"/v1/accounts/{account['id']}/balance?as_of_seq=null")
    assert response.status == 422
    assert (await response.json())["error"]["field"] == "as_of_seq"
