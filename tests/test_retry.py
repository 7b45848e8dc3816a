"""A real serialization failure from PostgreSQL is retried; exhaustion is 503.

The failure is provoked, not mocked: the test's own transaction updates a
balance row, the append (SERIALIZABLE) reads that row, then blocks updating it;
when the test commits, PostgreSQL aborts the append with 40001
("could not serialize access due to concurrent update").
"""

import asyncio
import uuid

import pytest

from ledger.api.app import create_app
from ledger.config import Settings
from ledger.store.retry import RetryPolicy
from tests.conftest import kill_writer, ledger_snapshot, transfer_body, wait_for_blocked_backend


async def conflicting_transfer(client, db, debit, credit):
    """POST a transfer while the test's transaction holds the debit balance row."""
    async with db.transaction(isolation="serializable"):
        await db.execute("UPDATE balances SET seq = seq WHERE account_id = $1", uuid.UUID(debit["id"]))
        request = asyncio.ensure_future(client.post("/v1/transfers", json=transfer_body(debit, credit, "1.00")))
        await wait_for_blocked_backend(db)
    return await request


async def test_a_serialization_failure_is_retried_and_the_transfer_recorded_once(client, open_account, db):
    a, b = await open_account(), await open_account()
    response = await conflicting_transfer(client, db, a, b)
    assert response.status == 201
    health = await (await client.get("/health/ready")).json()
    assert health["database"]["append_retries"] == 1
    assert await db.fetchval("SELECT count(*) FROM transfers") == 1


@pytest.fixture
async def impatient_client(database_url, aiohttp_client):
    settings = Settings(database_url=database_url, retry=RetryPolicy(attempts=1))
    return await aiohttp_client(create_app(settings))


async def test_retries_exhausted_is_503_with_retry_after_and_changes_nothing(impatient_client, db):
    client = impatient_client
    a, b = [await (await client.post("/v1/accounts", json={"currency": "USD", "scale": 2})).json() for _ in "ab"]
    before = await ledger_snapshot(db)
    response = await conflicting_transfer(client, db, a, b)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"]["code"] == "unavailable"
    after = await ledger_snapshot(db)
    # Only the test's own no-op update touched the row.
    assert after == before


async def test_the_writer_reconnects_after_its_connection_is_killed(client, open_account, db):
    a, b = await open_account(), await open_account()
    assert await kill_writer(db) == 1
    response = await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))
    assert response.status == 201
    assert await db.fetchval("SELECT count(*) FROM transfers") == 1
