"""Health endpoints and start-up against a database whose schema is not at head."""

import os

import aiohttp
import asyncpg
import pytest

from ledger.api.app import StartupError, create_app
from ledger.config import Settings
from ledger.store import migrations
from tests.conftest import with_database


async def test_live_is_ok_and_names_the_process_that_answered(client):
    response = await client.get("/health/live")
    assert (response.status, await response.json()) == (200, {"status": "ok", "pid": os.getpid()})


async def test_ready_reports_the_schema_revision_and_pool(client):
    response = await client.get("/health/ready")
    body = await response.json()
    assert response.status == 200
    assert body["status"] == "ok"
    assert body["database"]["schema_revision"] == migrations.head_revision()
    assert body["database"]["pool_max"] == Settings().pool_max_size


@pytest.fixture
async def empty_database(server_dsn):
    admin = await asyncpg.connect(server_dsn)
    await admin.execute('CREATE DATABASE "ledger_unmigrated"')
    yield with_database(server_dsn, "ledger_unmigrated")
    await admin.execute('DROP DATABASE "ledger_unmigrated" WITH (FORCE)')
    await admin.close()


async def test_start_up_refuses_a_schema_not_at_head(empty_database, aiohttp_client):
    with pytest.raises(StartupError, match="run `ledger migrate`"):
        await aiohttp_client(create_app(Settings(database_url=empty_database)))


async def test_ready_is_503_in_seconds_when_the_database_stops_answering(service, freeze_database):
    served = await service()
    freeze_database(served)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        async with session.get(f"{served.url}/health/ready") as response:
            assert response.status == 503
            body = await response.json()
    assert body["status"] == "unavailable"
    assert body["reason"] == "database unreachable: no answer within 2 s"
