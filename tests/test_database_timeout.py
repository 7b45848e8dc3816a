"""The service does not wait on the database for ever: a write it does not
finish, or a query of a read it does not answer, within
``LEDGER_DATABASE_TIMEOUT`` seconds is answered 503 ``unavailable``.

The database is held up for real: the test's own transaction holds the
append lock or a table's lock, or the whole PostgreSQL server is stopped
(SIGSTOP), as a hung host leaves it. A write given up may have been recorded
(its commit may have been on its way); the writes queued behind it were
never sent.
"""

import asyncio
import random
import signal
import time

import aiohttp
import pytest

from ledger.api.app import create_app
from ledger.config import Settings
from ledger.store.retry import RetryPolicy
from ledger.store.write_path import COPY_FROM
from tests.conftest import appends_held_up, assert_log_matches_projections, transfer_body, wait_for_blocked_backend

LIMIT = 1.0


@pytest.fixture
async def client(database_url, signing_key_file, clock, aiohttp_client):
    """The service, giving up on the database after :data:`LIMIT` seconds."""
    settings = Settings(
        database_url=database_url, signing_key_file=signing_key_file, retry=RetryPolicy(time_limit=LIMIT)
    )
    return await aiohttp_client(create_app(settings, clock=clock))


async def opened(session: aiohttp.ClientSession, served, count: int) -> list[dict]:
    """``count`` accounts opened on ``served``, a service this test started."""
    return [
        await (await session.post(f"{served.url}/v1/accounts", json={"currency": "USD", "scale": 2})).json()
        for _ in range(count)
    ]


async def a_stream_connection_pooled(session: aiohttp.ClientSession, served) -> None:
    """Until ``served`` holds a stream connection idle in its stream pool: one
    stream made, and its end logged."""
    assert (await session.get(f"{served.url}/v1/events?limit=1")).status == 200
    await served.said('"GET /v1/events?limit=1 HTTP/1.1" 200')


async def gets_at_once_while_locked(client, db, table: str, path: str, times: int) -> tuple[set[int], float]:
    """``GET path`` ``times`` at once while the test's transaction holds
    ``table`` locked against every read: the statuses answered, and the
    longest wait for an answer."""

    async def timed() -> tuple[int, float]:
        started = time.monotonic()
        response = await client.get(path)
        return response.status, time.monotonic() - started

    async with db.transaction():
        await db.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        answers = await asyncio.gather(*(timed() for _ in range(times)))
    return {status for status, _ in answers}, max(waited for _, waited in answers)


async def test_a_write_held_up_past_the_time_limit_is_503_saying_it_may_be_recorded(client, open_account, db):
    a, b = await open_account(), await open_account()
    async with appends_held_up(db):
        started = time.monotonic()
        response = await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))
        waited = time.monotonic() - started
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    error = (await response.json())["error"]
    assert error["code"] == "unavailable"
    assert "did not answer within 1 s" in error["message"]
    assert "retry it with the same id" in error["message"]
    assert LIMIT <= waited < LIMIT + 5


async def test_writes_queued_behind_it_are_503_and_never_recorded(client, open_account, db):
    a, b = await open_account(), await open_account()
    first = transfer_body(a, b, "1.00")
    behind = [transfer_body(a, b, "2.00") for _ in range(4)]
    async with appends_held_up(db):
        in_flight = asyncio.ensure_future(client.post("/v1/transfers", json=first))
        await wait_for_blocked_backend(db)
        responses = await asyncio.gather(*(client.post("/v1/transfers", json=body) for body in behind))
        assert (await in_flight).status == 503
    for response in responses:
        assert response.status == 503
        assert "this write was not sent: retry it with the same id" in (await response.json())["error"]["message"]
    # Appends are serial: once a new one is recorded, the one given up has
    # ended too, recorded or not.
    assert (await client.post("/v1/transfers", json=transfer_body(a, b, "3.00"))).status == 201
    for body in behind:
        assert (await client.get(f"/v1/transfers/{body['id']}")).status == 404


async def test_a_write_given_up_while_it_waits_for_the_lock_is_never_recorded(client, open_account, db):
    a, b = await open_account(), await open_account()
    body = transfer_body(a, b, "1.00")
    async with appends_held_up(db):
        assert (await client.post("/v1/transfers", json=body)).status == 503
        # Its connection closed, the server ends the statement that waited
        # for the lock, rather than run it once the lock is let go.
        await wait_for_blocked_backend(db, blocked=False)
    assert (await client.post("/v1/transfers", json=transfer_body(a, b, "3.00"))).status == 201
    assert (await client.get(f"/v1/transfers/{body['id']}")).status == 404


async def test_a_write_whose_accounts_cannot_be_read_in_time_is_refused_as_not_sent_after_one_limit(
    client, settings, aiohttp_client, db
):
    # Accounts this service has never seen: deciding the write reads them.
    other = await aiohttp_client(create_app(settings))
    c, d = [await (await other.post("/v1/accounts", json={"currency": "USD", "scale": 2})).json() for _ in "cd"]
    async with db.transaction():
        await db.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        response = await client.post("/v1/transfers", json=transfer_body(c, d, "1.00"))
        waited = time.monotonic() - started
    assert response.status == 503
    assert (await response.json())["error"]["message"] == (
        "the database did not answer within 1 s; this write was not sent: retry it with the same id"
    )
    # Not decided under the lock next, on the database that just did not answer.
    assert LIMIT <= waited < 1.8 * LIMIT


async def test_the_write_retried_with_its_id_once_the_database_answers_is_applied_once(client, open_account, db):
    a, b = await open_account(), await open_account()
    body = transfer_body(a, b, "1.00")
    async with appends_held_up(db):
        assert (await client.post("/v1/transfers", json=body)).status == 503
    again = await client.post("/v1/transfers", json=body)
    assert again.status in (200, 201), await again.text()
    account = await (await client.get(f"/v1/accounts/{a['id']}")).json()
    assert account["balance"]["debits_posted"] == "1.00"
    assert await db.fetchval("SELECT count(*) FROM transfers") == 1


async def test_a_write_to_a_database_that_stops_answering_is_503_within_the_time_limit(service, freeze_database):
    served = await service(LEDGER_DATABASE_TIMEOUT="2")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        a, b = await opened(session, served, 2)
        freeze_database(served)
        started = time.monotonic()
        async with session.post(f"{served.url}/v1/transfers", json=transfer_body(a, b, "1.00")) as response:
            assert response.status == 503
            error = (await response.json())["error"]
        waited = time.monotonic() - started
    # On an idle service a write first reads the head of the log: no answer
    # to that within the limit, and the write is refused, never sent.
    assert error == {
        "code": "unavailable",
        "message": "the database did not answer within 2 s; this write was not sent: retry it with the same id",
    }
    assert 2 <= waited < 3.5


async def test_a_read_held_up_past_the_time_limit_is_503_and_the_next_read_is_served(client, open_account, db):
    account = await open_account()
    async with db.transaction():
        await db.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        response = await client.get(f"/v1/accounts/{account['id']}")
        waited = time.monotonic() - started
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"] == {
        "code": "unavailable",
        "message": "the database did not answer within 1 s",
    }
    assert LIMIT <= waited < LIMIT + 5
    assert (await client.get(f"/v1/accounts/{account['id']}")).status == 200


async def test_reads_waiting_for_a_read_connection_are_503_within_the_time_limit_too(
    database_url, signing_key_file, aiohttp_client, db
):
    settings = Settings(
        database_url=database_url,
        signing_key_file=signing_key_file,
        pool_min_size=1,
        pool_max_size=2,
        retry=RetryPolicy(time_limit=LIMIT),
    )
    client = await aiohttp_client(create_app(settings))
    account = await (await client.post("/v1/accounts", json={"currency": "USD", "scale": 2})).json()
    # Ten reads on two connections: one after another they would take five limits.
    statuses, longest = await gets_at_once_while_locked(client, db, "accounts", f"/v1/accounts/{account['id']}", 10)
    assert statuses == {503}
    assert longest < 3.5 * LIMIT


async def test_a_read_of_a_database_that_stops_answering_is_503_within_the_time_limit(service, freeze_database):
    served = await service(LEDGER_DATABASE_TIMEOUT="1")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        [account] = await opened(session, served, 1)
        freeze_database(served)
        started = time.monotonic()
        async with session.get(f"{served.url}/v1/accounts/{account['id']}") as response:
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "unavailable"
        # Not once asyncpg has given up cancelling the query, as long again.
        assert LIMIT <= time.monotonic() - started < 2 * LIMIT


async def test_checkpoints_asked_at_once_of_a_database_held_up_are_503_within_the_limit_each(client, db):
    # One signing at a time: one after another they would take six limits.
    statuses, longest = await gets_at_once_while_locked(client, db, "ledger_head", "/v1/checkpoint", 6)
    assert statuses == {503}
    assert longest < 3.5 * LIMIT


async def test_a_proof_of_a_database_held_up_is_503_within_the_limit(client, open_account, db):
    await open_account()  # the log's first event
    async with db.transaction():
        await db.execute("LOCK TABLE ledger_head IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        async with asyncio.timeout(10 * LIMIT):
            response = await client.get("/v1/proofs/inclusion", params={"seq": "1"})
        waited = time.monotonic() - started
    assert response.status == 503
    assert (await response.json())["error"]["message"] == "the database did not answer within 1 s"
    assert LIMIT <= waited < 3 * LIMIT
    assert (await client.get("/v1/proofs/inclusion", params={"seq": "1"})).status == 200


async def test_told_to_stop_while_the_database_does_not_answer_it_answers_what_is_in_flight_and_exits_0(
    linked_service, database_link
):
    served = await linked_service(LEDGER_EXPIRY_INTERVAL="3600")  # no sweep: the write is all it sends
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        a, b = await opened(session, served, 2)
        assert (await session.post(f"{served.url}/v1/transfers", json=transfer_body(a, b, "1.00"))).status == 201
        await a_stream_connection_pooled(session, served)
        database_link.hold()
        in_flight = asyncio.ensure_future(session.post(f"{served.url}/v1/transfers", json=transfer_body(a, b, "2.00")))
        await database_link.holding()  # the write has reached the database's side
        started = time.monotonic()
        served.send(signal.SIGTERM)
        assert (await in_flight).status == 503
        assert await served.stopped() == 0, served.log
        waited = time.monotonic() - started
    # The write given up after the limit, then the pools' closing, given up
    # after the limit in all.
    assert waited < 3 * LIMIT, served.log
    for pool in ("the stream pool", "the read pool"):
        assert f"{pool} did not close within 1 s: its connections were dropped" in served.log


async def test_a_copied_batch_whose_database_stops_answering_mid_copy_is_503_recorded_not_at_all_and_retried_whole(
    linked_service, database_link, db
):
    served = await linked_service()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        accounts = await opened(session, served, 8)
        rng = random.Random(7)
        batch = {"transfers": [transfer_body(*rng.sample(accounts, 2), "0.01") for _ in range(COPY_FROM + 10)]}
        database_link.hold_at(b"d")
        started = time.monotonic()
        async with session.post(f"{served.url}/v1/transfer-batches", json=batch) as response:
            assert response.status == 503
            assert "may have been recorded" in (await response.json())["error"]["message"]
        assert time.monotonic() - started < 2 * LIMIT + 2
        copying = "SELECT count(*) FROM pg_stat_progress_copy AS c JOIN pg_database AS d ON d.oid = c.datid"
        assert await db.fetchval(f"{copying} WHERE d.datname = current_database()") == 1  # held mid-COPY
        database_link.cut()  # what was held is lost, as on a cut network
        async with session.post(f"{served.url}/v1/transfer-batches", json=batch) as response:
            assert response.status == 200, await response.text()
            assert {r["status"] for r in (await response.json())["results"]} == {"created"}
    assert await db.fetchval("SELECT count(*) FROM transfers") == COPY_FROM + 10
    await assert_log_matches_projections(db)


async def test_told_to_stop_while_an_expiry_sweep_waits_on_the_database_it_does_not_wait_for_the_sweep(
    linked_service, database_link
):
    served = await linked_service(LEDGER_EXPIRY_INTERVAL="0.1")
    database_link.hold()
    await database_link.holding()  # a sweep's query, unanswered
    started = time.monotonic()
    assert await served.stop() == 0, served.log
    # The pools' closing, given up after the limit; the sweep is dropped at once.
    assert time.monotonic() - started < 2 * LIMIT, served.log


async def test_told_to_stop_while_a_stream_waits_on_the_database_it_cuts_the_stream_after_the_shutdown_timeout(
    linked_service, database_link
):
    grace = 3  # LEDGER_SHUTDOWN_TIMEOUT, longer than the database's limit
    served = await linked_service(LEDGER_EXPIRY_INTERVAL="3600", LEDGER_SHUTDOWN_TIMEOUT=str(grace))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await opened(session, served, 1)
        await a_stream_connection_pooled(session, served)
        database_link.hold_at(b"B")  # the next stream's page, past its BEGIN
        async with session.get(f"{served.url}/v1/events?limit=10") as response:
            assert response.status == 200
            await database_link.holding()
            started = time.monotonic()
            served.send(signal.SIGTERM)
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()  # truncated: never a stream that looks complete
            cut = time.monotonic() - started
        assert await served.stopped() == 0, served.log
        waited = time.monotonic() - started
    # The stream gets the shutdown timeout, once, and is then cut; the pools
    # close within the limit.
    assert grace <= cut < grace + LIMIT, served.log
    assert waited < grace + 2 * LIMIT, served.log
    assert "cutting 1 stream(s) still running at the stop's LEDGER_SHUTDOWN_TIMEOUT" in served.log
    # Cancelled, the stream dropped its connection: no ROLLBACK waited on,
    # no stream failing when its connection is dropped under it.
    assert "Traceback" not in served.log
