"""`LEDGER_READ_DATABASE_URL`: long reads from a real streaming replica.

The replica is made in the test session by ``pg_basebackup -R`` from the
test server. Pausing its replay makes it lag on purpose, which shows which
reads go to it (they see the older prefix) and which never do.
"""

import asyncio
import json
import logging
import uuid

import asyncpg
import pytest

from ledger.api.app import create_app
from ledger.config import ConfigError, Settings
from tests.conftest import replay_paused, replayed_up_to, transfer_body, with_database

#: Nothing listens there: a replica that is down.
UNREACHABLE = "postgresql://postgres@127.0.0.1:9/ledger"


@pytest.fixture
def settings(database_url, replica_url):
    return Settings(database_url=database_url, read_database_url=replica_url, replica_poll_interval=0.01)


async def event_lines(client, query: str = "") -> list[dict]:
    response = await client.get(f"/v1/events{query}")
    assert response.status == 200, await response.text()
    return [json.loads(line) for line in (await response.text()).splitlines() if line]


async def test_the_event_stream_reads_the_replica(client, open_account, db, replica):
    await open_account()
    await replayed_up_to(replica, 1)
    async with replay_paused(replica):
        await open_account()
        await open_account()
        assert await db.fetchval("SELECT seq FROM ledger_head") == 3
        assert [e["seq"] for e in await event_lines(client)] == [1]
    await replayed_up_to(replica, 3)
    assert [e["seq"] for e in await event_lines(client)] == [1, 2, 3]


async def test_writes_idempotency_and_point_reads_use_the_primary_while_the_replica_lags(client, open_account, replica):
    a, b = await open_account(), await open_account()
    await replayed_up_to(replica, 2)
    async with replay_paused(replica):
        body = transfer_body(a, b, "5.00")
        assert (await client.post("/v1/transfers", json=body)).status == 201
        again = await client.post("/v1/transfers", json=body)
        assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
        assert (await client.get(f"/v1/transfers/{body['id']}")).status == 200
        account = await (await client.get(f"/v1/accounts/{b['id']}")).json()
        assert account["balance"]["credits_posted"] == "5.00"


async def test_a_follower_on_the_replica_gets_every_event_in_order(client, open_account, replica):
    a, b = await open_account(), await open_account()
    response = await client.get("/v1/events?follow=true&after_seq=2")
    assert response.status == 200
    async with replay_paused(replica):
        answers = await asyncio.gather(
            *(client.post("/v1/transfers", json=transfer_body(a, b, "1.00")) for _ in range(30))
        )
        assert all(r.status == 201 for r in answers)
    for _ in range(20):
        assert (await client.post("/v1/transfers", json=transfer_body(b, a, "1.00"))).status == 201
    seqs = []
    while len(seqs) < 50:
        line = await asyncio.wait_for(response.content.readline(), 30)
        if line.strip():
            seqs.append(json.loads(line)["seq"])
    assert seqs == list(range(3, 53))
    response.close()


async def test_a_balance_as_of_a_seq_reads_the_replica_and_is_unavailable_past_its_head(
    client, open_account, fund, replica
):
    account = await open_account()
    await fund(account, "10.00")
    await replayed_up_to(replica, 3)
    async with replay_paused(replica):
        await fund(account, "5.00")
        response = await client.get(f"/v1/accounts/{account['id']}/balance")
        assert (await response.json())["credits_posted"] == "10.00"
        behind = await client.get(f"/v1/accounts/{account['id']}/balance?as_of_seq=5")
        assert behind.status == 503 and behind.headers["Retry-After"] == "1"
        assert (await behind.json())["error"]["code"] == "unavailable"
        past = await client.get(f"/v1/accounts/{account['id']}/balance?as_of_seq=6")
        assert past.status == 422
        assert (await past.json())["error"]["field"] == "as_of_seq"


async def test_a_proof_of_a_tree_the_replica_has_yet_to_replay_is_503_not_422(client, open_account, fund, replica):
    account = await open_account()
    await fund(account, "10.00")
    await replayed_up_to(replica, 3)
    async with replay_paused(replica):
        await fund(account, "5.00")
        assert (await client.get("/v1/proofs/inclusion?seq=3&tree_size=3")).status == 200
        behind = await client.get("/v1/proofs/inclusion?seq=3&tree_size=5")
        assert behind.status == 503 and behind.headers["Retry-After"] == "1"
        past = await client.get("/v1/proofs/consistency?first=1&second=6")
        assert past.status == 422 and (await past.json())["error"]["field"] == "second"


async def test_reconciliation_scans_the_replica_and_repairs_on_the_primary(client, open_account, fund, replica):
    account = await open_account()
    await fund(account, "10.00")
    await replayed_up_to(replica, 3)
    async with replay_paused(replica):
        await fund(account, "1.00")
        scanned = await (await client.post("/admin/v1/reconciliations", json={})).json()
        assert (scanned["ok"], scanned["head_seq"]) == (True, 3)
        repaired = await (await client.post("/admin/v1/reconciliations", json={"repair": True})).json()
        assert (repaired["ok"], repaired["head_seq"], repaired["repaired"]) == (True, 5, 0)


async def test_ready_reports_the_replica_and_how_far_behind_it_is(client, open_account, replica):
    await open_account()
    await replayed_up_to(replica, 1)
    async with replay_paused(replica):
        await open_account()
        await open_account()
        body = await (await client.get("/health/ready")).json()
        assert body["database"]["replica"]["status"] == "ok"
        assert body["database"]["replica"]["standby"] is True
        assert (body["database"]["replica"]["head_seq"], body["database"]["replica"]["behind_seq"]) == (1, 2)
    await replayed_up_to(replica, 3)
    body = await (await client.get("/health/ready")).json()
    assert body["database"]["replica"]["behind_seq"] == 0


async def test_a_replica_that_is_down_makes_its_reads_unavailable_while_writes_go_on(
    database_url, aiohttp_client, caplog
):
    with caplog.at_level(logging.WARNING):
        client = await aiohttp_client(create_app(Settings(database_url=database_url, read_database_url=UNREACHABLE)))
    assert "the read replica is unreachable" in caplog.text
    events = await client.get("/v1/events")
    assert events.status == 503 and events.headers["Retry-After"] == "1"
    assert (await events.json())["error"]["code"] == "unavailable"
    opened = await client.post("/v1/accounts", json={"currency": "USD", "scale": 2})
    assert opened.status == 201
    assert (await client.get(f"/v1/accounts/{(await opened.json())['id']}")).status == 200
    ready = await client.get("/health/ready")
    assert ready.status == 200
    assert (await ready.json())["database"]["replica"]["status"] == "unavailable"


async def test_a_primary_given_as_the_replica_is_warned_of(database_url, aiohttp_client, caplog):
    with caplog.at_level(logging.WARNING):
        client = await aiohttp_client(create_app(Settings(database_url=database_url, read_database_url=database_url)))
    assert "LEDGER_READ_DATABASE_URL is not a standby" in caplog.text
    assert (await client.get("/v1/events")).status == 200


@pytest.mark.parametrize("url", ["mysql://u:secret@h/db", "localhost:5432"])
def test_a_read_url_that_is_not_postgresql_is_refused_without_its_password(url):
    with pytest.raises(ConfigError, match="LEDGER_READ_DATABASE_URL must be a PostgreSQL URL") as refused:
        Settings.from_env({"LEDGER_READ_DATABASE_URL": url})
    assert "secret" not in str(refused.value)


async def test_a_replica_without_the_schema_leaves_the_feed_waiting_and_the_service_stops_cleanly(
    aiohttp_client, database_url, server_dsn, caplog
):
    name = f"test_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')  # answers, holds no log
    try:
        settings = Settings(database_url=database_url, read_database_url=with_database(server_dsn, name))
        client = await aiohttp_client(create_app(settings))
        async with asyncio.timeout(10):
            while "the event feed cannot read the log" not in caplog.text:
                await asyncio.sleep(0.05)

        await client.close()  # the app's clean-up awaits the feed: it must not have died

        assert caplog.text.count("the event feed cannot read the log") == 1
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
