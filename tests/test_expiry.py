"""Expiry: a pending transfer with ``timeout_seconds`` cannot be decided from
its deadline on, and the service records its expiry by itself, exactly once."""

import asyncio
import logging
from datetime import datetime

import pytest

from ledger.api.app import create_app
from ledger.api.keys import EXPIRER
from ledger.config import ConfigError, Settings
from ledger.store.head import NOTIFY_CHANNEL
from ledger.store.retry import RetryPolicy
from tests.conftest import (
    assert_log_matches_projections,
    balance,
    ledger_snapshot,
    transfer_body,
    wait_for_blocked_backend,
)


@pytest.fixture
async def pair(open_account):
    return await open_account(), await open_account()


async def hold(client, pair, timeout_seconds=60):
    body = transfer_body(*pair, "25.00", pending=True, timeout_seconds=timeout_seconds)
    response = await client.post("/v1/transfers", json=body)
    assert response.status == 201, await response.text()
    return await response.json()


async def decide(client, transfer, decision):
    response = await client.post(f"/v1/transfers/{transfer['id']}/{decision}")
    return response.status, (await response.json())


def timestamp(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
async def next_append(db):
    """``next_append(seq)``: a future that the NOTIFY of the first append
    after ``seq`` sets to the new head seq."""
    waiting: list[tuple[int, asyncio.Future[int]]] = []

    def notified(conn, pid, channel, payload):
        for after, future in waiting:
            if int(payload) > after and not future.done():
                future.set_result(int(payload))

    def arm(after: int) -> asyncio.Future[int]:
        waiting.append((after, asyncio.get_running_loop().create_future()))
        return waiting[-1][1]

    await db.add_listener(NOTIFY_CHANNEL, notified)
    yield arm
    await db.remove_listener(NOTIFY_CHANNEL, notified)


async def test_deadline_is_timeout_seconds_after_creation(client, pair):
    transfer = await hold(client, pair, timeout_seconds=90)
    assert (timestamp(transfer["expires_at"]) - timestamp(transfer["created_at"])).total_seconds() == 90


async def test_before_the_deadline_a_pending_transfer_can_be_posted(client, pair, clock):
    transfer = await hold(client, pair, timeout_seconds=60)
    clock.advance(59)
    status, posted = await decide(client, transfer, "post")
    assert (status, posted["status"]) == (200, "posted")


@pytest.mark.parametrize("decision", ["post", "void"])
async def test_from_the_deadline_on_a_decision_is_refused_before_the_expiry_is_recorded(
    client, pair, clock, db, decision
):
    transfer = await hold(client, pair, timeout_seconds=60)
    before = await ledger_snapshot(db)
    clock.advance(60)
    status, body = await decide(client, transfer, decision)
    assert (status, body["error"]["code"]) == (409, "transfer_expired")
    assert await ledger_snapshot(db) == before


async def test_the_service_records_the_expiry_by_itself(client, pair, clock, db, next_append):
    transfer = await hold(client, pair, timeout_seconds=60)
    appended = next_append(transfer["seq"])
    clock.advance(61)
    # The background sweep appends on its own; the NOTIFY says it committed.
    seq = await asyncio.wait_for(appended, timeout=10)
    event = await db.fetchrow("SELECT type, stream_id, data, metadata FROM events WHERE seq = $1", seq)
    assert event["type"] == "pending_transfer_expired"
    assert str(event["stream_id"]) == transfer["id"]
    assert event["data"]["amount"] == "25.00"
    assert event["metadata"] == {"cause": "timeout"}
    stored = await (await client.get(f"/v1/transfers/{transfer['id']}")).json()
    assert (stored["status"], stored["decided_seq"]) == ("expired", seq)
    for account in pair:
        assert set((await balance(client, account)).values()) == {"0.00"}
    await assert_log_matches_projections(db)


@pytest.mark.parametrize("decision", ["post", "void"])
async def test_an_expired_transfer_cannot_be_decided(client, pair, clock, db, decision):
    transfer = await hold(client, pair, timeout_seconds=60)
    clock.advance(60)
    assert await client.app[EXPIRER].sweep() == 1
    before = await ledger_snapshot(db)
    status, body = await decide(client, transfer, decision)
    assert (status, body["error"]["code"]) == (409, "transfer_expired")
    assert await ledger_snapshot(db) == before


async def test_a_decided_transfer_does_not_expire(client, pair, clock, db):
    posted, voided = await hold(client, pair), await hold(client, pair)
    await decide(client, posted, "post")
    await decide(client, voided, "void")
    clock.advance(3600)
    assert await client.app[EXPIRER].sweep() == 0
    assert (await db.fetchval("SELECT count(*) FROM events WHERE type = 'pending_transfer_expired'")) == 0


async def test_a_transfer_without_timeout_never_expires(client, pair, clock):
    transfer = await hold(client, pair, timeout_seconds=None)
    clock.advance(10 * 366 * 24 * 3600)
    assert await client.app[EXPIRER].sweep() == 0
    status, posted = await decide(client, transfer, "post")
    assert (status, posted["status"]) == (200, "posted")


async def test_processes_sweeping_at_once_record_each_expiry_once(client, pair, clock, db, settings, aiohttp_client):
    # A second service process on the same database, with the same clock.
    other = await aiohttp_client(create_app(settings, clock=clock))
    transfers = [await hold(client, pair, timeout_seconds=30) for _ in range(40)]
    clock.advance(30)
    counts = await asyncio.gather(client.app[EXPIRER].sweep(), other.app[EXPIRER].sweep())
    expired = await db.fetch(
        "SELECT stream_id, count(*) AS n FROM events WHERE type = 'pending_transfer_expired' GROUP BY stream_id"
    )
    assert sorted(str(r["stream_id"]) for r in expired) == sorted(t["id"] for t in transfers)
    assert {r["n"] for r in expired} == {1}
    # The background sweeps may have taken some first; never more than all.
    assert sum(counts) <= len(transfers)
    await assert_log_matches_projections(db)


async def test_expiry_interval_is_a_setting():
    assert Settings.from_env({"LEDGER_EXPIRY_INTERVAL": "0.5"}).expiry_interval == 0.5


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "soon", "3601"])
def test_expiry_interval_out_of_range_is_refused_at_start(raw):
    with pytest.raises(ConfigError, match="LEDGER_EXPIRY_INTERVAL"):
        Settings.from_env({"LEDGER_EXPIRY_INTERVAL": raw})


async def test_sweeps_failing_while_the_database_is_away_are_logged_once_and_their_end_once(
    database_url, signing_key_file, aiohttp_client, db, caplog
):
    settings = Settings(
        database_url=database_url,
        signing_key_file=signing_key_file,
        expiry_interval=0.5,
        retry=RetryPolicy(time_limit=1.0),
    )
    await aiohttp_client(create_app(settings))
    caplog.set_level(logging.INFO, logger="ledger.store.expiry")
    async with db.transaction():
        # Each sweep's read waits on the lock until the read pool gives it up.
        await db.execute("LOCK TABLE transfers IN ACCESS EXCLUSIVE MODE")
        for _ in range(3):
            await wait_for_blocked_backend(db)
            await wait_for_blocked_backend(db, blocked=False)
    async with asyncio.timeout(10):
        while "expiry sweeps succeed again" not in caplog.text:
            await asyncio.sleep(0.01)
    records = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records if r.name == "ledger.store.expiry"]
    assert records == [
        (
            "WARNING",
            "expiry sweeps fail while the database is away (no answer in time); retrying every 0.5 s",
            None,
        ),
        ("INFO", "expiry sweeps succeed again", None),
    ]
