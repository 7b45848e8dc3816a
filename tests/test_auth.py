"""API tokens: who may call, with which scope, and what the log records."""

import os
import subprocess
import sys
import uuid

import pytest

from ledger.api.app import create_app
from ledger.config import ConfigError, Settings, parse_tokens
from tests.conftest import ledger_snapshot

TOKENS = "reader:r-secret:read;payments:p-secret:read,write;ops:o-secret:admin"


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def secured(database_url, aiohttp_client):
    return await aiohttp_client(create_app(Settings(database_url=database_url, tokens=parse_tokens(TOKENS))))


ACCOUNT = {"currency": "USD", "scale": 2}


#: Served without a token.
OPEN = {"/openapi.json"}


def endpoints():
    """Every (method, path) the service routes, open ones aside, with a path id filled in."""
    routes = create_app(Settings()).router.routes()
    found = {
        (route.method, route.resource.canonical.replace("{id}", str(uuid.uuid4())))
        for route in routes
        if route.method != "HEAD"
        and route.resource.canonical not in OPEN
        and not route.resource.canonical.startswith("/health")
    }
    return sorted(found)


ENDPOINTS = endpoints()


def scope_of(method, path):
    return "admin" if path.startswith("/admin") else "read" if method == "GET" else "write"


UNDER_SCOPED = [
    (method, path, secret)
    for method, path in ENDPOINTS
    for secret, scopes in (("r-secret", {"read"}), ("p-secret", {"read", "write"}))
    if scope_of(method, path) not in scopes
]


def test_every_endpoint_is_covered_below():
    assert {"/v1/transfers", "/v1/accounts", "/admin/v1/reconciliations"} <= {p for _, p in ENDPOINTS}


@pytest.mark.parametrize(
    "headers", [{}, bearer("wrong"), {"Authorization": "Basic p-secret"}], ids=["missing", "unknown", "not bearer"]
)
@pytest.mark.parametrize("method, path", ENDPOINTS)
async def test_a_missing_or_unknown_token_is_401_and_changes_nothing(secured, db, headers, method, path):
    before = await ledger_snapshot(db)
    response = await secured.request(method, path, json=ACCOUNT, headers=headers)
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unauthorized"
    assert await ledger_snapshot(db) == before


@pytest.mark.parametrize("method, path, secret", UNDER_SCOPED)
async def test_a_token_without_the_scope_is_403_and_changes_nothing(secured, db, method, path, secret):
    before = await ledger_snapshot(db)
    response = await secured.request(method, path, json=ACCOUNT, headers=bearer(secret))
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "forbidden"
    assert await ledger_snapshot(db) == before


async def test_an_admin_token_may_reconcile(secured):
    response = await secured.post("/admin/v1/reconciliations", json={}, headers=bearer("o-secret"))
    assert response.status == 200
    assert (await response.json())["ok"] is True


@pytest.mark.parametrize("secret", ["p-secret", "o-secret"], ids=["write", "admin"])
async def test_write_and_admin_tokens_may_write_and_read(secured, secret):
    created = await secured.post("/v1/accounts", json=ACCOUNT, headers=bearer(secret))
    assert created.status == 201
    account_id = (await created.json())["id"]
    assert (await secured.get(f"/v1/accounts/{account_id}", headers=bearer(secret))).status == 200


async def test_the_token_name_is_recorded_with_the_event(secured, db):
    response = await secured.post("/v1/accounts", json=ACCOUNT, headers={**bearer("p-secret"), "X-Request-ID": "r-1"})
    account_id = uuid.UUID((await response.json())["id"])
    metadata = await db.fetchval("SELECT metadata FROM events WHERE stream_id = $1", account_id)
    assert metadata == {"request_id": "r-1", "token": "payments"}


async def test_health_needs_no_token(secured):
    assert (await secured.get("/health/live")).status == 200


async def test_the_openapi_document_needs_no_token(secured):
    assert (await secured.get("/openapi.json")).status == 200


@pytest.mark.parametrize("raw", ["payments", "payments:secret", "p:s:fly", "p:s:", ":s:read", "a:s:read;a:t:write"])
def test_malformed_tokens_setting_is_refused(raw):
    with pytest.raises(ConfigError):
        parse_tokens(raw)


def test_two_tokens_with_the_same_secret_are_refused_without_saying_it():
    with pytest.raises(ConfigError, match="'payments' and 'ops' have the same secret") as refused:
        parse_tokens("payments:shared-secret:read;ops:shared-secret:admin")
    assert "shared-secret" not in str(refused.value)


def test_a_secret_may_contain_colons():
    [token] = parse_tokens("ops:a:b:c:admin")
    assert (token.name, token.secret, token.scopes) == ("ops", "a:b:c", frozenset({"admin"}))


def test_serve_refuses_a_non_loopback_address_without_tokens():
    env = {**os.environ, "LEDGER_HOST": "0.0.0.0"}
    env.pop("LEDGER_TOKENS", None)
    result = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in result.stderr
