"""Streamed history: an account's entries with running balances, the global
event feed (and following it live), and balances as of a past seq."""

import asyncio
import dataclasses
import os
import random
import signal
import time
import uuid

import aiohttp
import asyncpg
import msgspec
import pytest

from ledger.api.app import create_app
from ledger.api.keys import FEED, STREAM_POOL, STREAMS
from ledger.api.stream_state import OpenStreams
from ledger.config import Settings
from ledger.domain.events import RecordedEvent, event_from_data
from ledger.domain.ledger import Ledger
from ledger.store.feed import ANSWER_WITHIN
from ledger.store.lines import ENTRY_PAGE, EVENT_PAGE, PAGE
from tests.conftest import appends_held_up, transfer_body, wait_for_blocked_backend


@pytest.fixture
async def moved(client, open_account, fund):
    """Three accounts moved by posted, pending, posted-in-part and voided transfers."""
    a, b, c = [await open_account() for _ in range(3)]
    await fund(a, "100.00")
    rng = random.Random(5)
    for n in range(30):
        debit, credit = rng.sample([a, b, c], 2)
        body = transfer_body(debit, credit, f"{rng.randint(1, 500) / 100:.2f}", pending=n % 4 == 0)
        assert (await client.post("/v1/transfers", json=body)).status == 201
        if n % 8 == 0:
            assert (await client.post(f"/v1/transfers/{body['id']}/post", json={"amount": "0.01"})).status == 200
        elif n % 4 == 0:
            assert (await client.post(f"/v1/transfers/{body['id']}/void")).status == 200
    return a, b, c


async def lines(response):
    assert response.status == 200, await response.text()
    assert response.content_type == "application/x-ndjson"
    return [msgspec.json.decode(line) for line in (await response.read()).splitlines()]


async def folded_balances(db, account_id):
    """The account's balance after each event that moved it, by folding the log."""
    ledger = Ledger()
    after = []
    rows = await db.fetch("SELECT seq, type, data, metadata, recorded_at FROM events ORDER BY seq")
    for row in rows:
        record = RecordedEvent(
            row["seq"], event_from_data(row["type"], row["data"]), row["recorded_at"], row["metadata"]
        )
        for entry in ledger.apply(record):
            if entry.account_id == account_id:
                after.append((entry.seq, entry.balance))
    return after


async def test_entries_come_oldest_first_with_the_running_balance_of_the_fold(client, moved, db):
    for account in moved:
        entries = await lines(await client.get(f"/v1/accounts/{account['id']}/entries"))
        expected = await folded_balances(db, uuid.UUID(account["id"]))
        assert [e["seq"] for e in entries] == [seq for seq, _ in expected]
        for entry, (_, balance) in zip(entries, expected):
            assert entry["balance"] == {
                name: f"{getattr(balance, name):.2f}"
                for name in ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
            }
        assert entries[-1]["balance"] == (await (await client.get(f"/v1/accounts/{account['id']}")).json())["balance"]


async def test_entries_name_their_transfer_side_and_type(client, open_account):
    a, b = await open_account(), await open_account()
    body = transfer_body(a, b, "2.5")
    await client.post("/v1/transfers", json=body)
    [entry] = await lines(await client.get(f"/v1/accounts/{a['id']}/entries"))
    assert (entry["transfer_id"], entry["side"], entry["type"], entry["amount"]) == (
        body["id"],
        "debit",
        "transfer_posted",
        "2.50",
    )
    assert entry["recorded_at"].endswith("Z")


async def test_entries_page_with_after_seq_and_limit(client, moved):
    url = f"/v1/accounts/{moved[0]['id']}/entries"
    everything = await lines(await client.get(url))
    first = await lines(await client.get(url, params={"limit": "4"}))
    rest = await lines(await client.get(url, params={"after_seq": str(first[-1]["seq"])}))
    assert first == everything[:4]
    assert first + rest == everything


async def test_events_are_the_whole_log_in_seq_order(client, moved, db):
    events = await lines(await client.get("/v1/events"))
    head = await db.fetchval("SELECT seq FROM ledger_head")
    assert [e["seq"] for e in events] == list(range(1, head + 1))
    stored = await db.fetchrow("SELECT type, stream_id, data FROM events WHERE seq = 5")
    assert events[4]["type"] == stored["type"]
    assert events[4]["stream_id"] == str(stored["stream_id"])
    assert events[4]["data"] == stored["data"]
    paged = await lines(await client.get("/v1/events", params={"after_seq": "5", "limit": "3"}))
    assert [e["seq"] for e in paged] == [6, 7, 8]


async def test_balance_as_of_a_seq_is_the_balance_right_after_that_event(client, moved, db):
    account = moved[1]
    folded = await folded_balances(db, uuid.UUID(account["id"]))
    head = await db.fetchval("SELECT seq FROM ledger_head")
    opened = await db.fetchval("SELECT seq FROM accounts WHERE id = $1", uuid.UUID(account["id"]))
    for seq in range(opened, head + 1):
        response = await client.get(f"/v1/accounts/{account['id']}/balance", params={"as_of_seq": str(seq)})
        assert response.status == 200
        body = await response.json()
        expected = [b for s, b in folded if s <= seq]
        assert body["as_of_seq"] == seq
        assert body["debits_posted"] == (f"{expected[-1].debits_posted:.2f}" if expected else "0.00")
        assert body["credits_pending"] == (f"{expected[-1].credits_pending:.2f}" if expected else "0.00")


async def test_balance_without_as_of_seq_is_the_current_one_at_the_head(client, moved, db):
    account = moved[2]
    body = await (await client.get(f"/v1/accounts/{account['id']}/balance")).json()
    current = (await (await client.get(f"/v1/accounts/{account['id']}")).json())["balance"]
    assert body == {
        "account_id": account["id"],
        "as_of_seq": await db.fetchval("SELECT seq FROM ledger_head"),
        **current,
    }


@pytest.mark.parametrize(
    "path, params, status, code, field",
    [
        ("/v1/accounts/{id}/entries", {"after_seq": "-1"}, 422, "invalid_field", "after_seq"),
        ("/v1/accounts/{id}/entries", {"after_seq": "ten"}, 422, "invalid_field", "after_seq"),
        ("/v1/accounts/{id}/entries", {"limit": "0"}, 422, "invalid_field", "limit"),
        ("/v1/accounts/{id}/entries", {"limt": "5"}, 422, "invalid_field", "limt"),
        ("/v1/accounts/{missing}/entries", {}, 404, "account_not_found", None),
        ("/v1/accounts/not-a-uuid/entries", {}, 422, "invalid_field", "id"),
        ("/v1/events", {"limit": "1.5"}, 422, "invalid_field", "limit"),
        ("/v1/events", {"follow": "maybe"}, 422, "invalid_field", "follow"),
        ("/v1/accounts/{id}/balance", {"as_of_seq": "-3"}, 422, "invalid_field", "as_of_seq"),
        ("/v1/accounts/{id}/balance", {"as_of_seq": "999"}, 422, "invalid_field", "as_of_seq"),
        ("/v1/accounts/{id}/balance", {"as_of_seq": "1"}, 422, "invalid_field", "as_of_seq"),
        ("/v1/accounts/{missing}/balance", {}, 404, "account_not_found", None),
        ("/v1/events", {"limit": "1e2"}, 422, "invalid_field", "limit"),
        ("/v1/accounts/{id}/entries", {"after_seq": "1.0"}, 422, "invalid_field", "after_seq"),
        ("/v1/events", {"follow": "1"}, 422, "invalid_field", "follow"),
        ("/v1/events", {"follow": "TRUE"}, 422, "invalid_field", "follow"),
        ("/v1/events", [("limit", "2"), ("limit", "1")], 422, "invalid_field", "limit"),
        ("/v1/events", [("follow", "false"), ("follow", "true")], 422, "invalid_field", "follow"),
        ("/v1/accounts/{id}/entries", [("after_seq", "0"), ("after_seq", "1")], 422, "invalid_field", "after_seq"),
        ("/v1/accounts/{id}/balance", [("as_of_seq", "2"), ("as_of_seq", "1")], 422, "invalid_field", "as_of_seq"),
    ],
)
async def test_bad_history_parameters_are_refused_in_the_error_shape(
    client, open_account, path, params, status, code, field
):
    await open_account()  # event 1: the account below is opened by event 2
    account = await open_account()
    response = await client.get(path.format(id=account["id"], missing=uuid.uuid4()), params=params)
    assert response.status == status
    error = (await response.json())["error"]
    assert (error["code"], error.get("field")) == (code, field)


async def test_an_integer_with_leading_zeros_is_refused_saying_so(client):
    response = await client.get("/v1/events", params={"after_seq": "007"})
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["field"] == "after_seq"
    assert error["message"] == "expected an integer in decimal digits without leading zeros, got '007'"


# -- writes first --------------------------------------------------------------


async def paced_ledger(aiohttp_client, settings, pause):
    """A service whose streams wait ``pause`` seconds at most for writes,
    with a log of three pages and its head."""
    client = await aiohttp_client(create_app(dataclasses.replace(settings, stream_pause=pause)))
    a, b = [await (await client.post("/v1/accounts", json={"currency": "USD", "scale": 2})).json() for _ in range(2)]
    batch = {"transfers": [transfer_body(a, b, "1.00") for _ in range(2 * PAGE + 500)]}
    assert (await client.post("/v1/transfer-batches", json=batch)).status == 200
    return client, (a, b), 2 * PAGE + 502


async def test_a_stream_lets_a_waiting_write_go_first_between_pages_for_at_most_the_pause(aiohttp_client, settings, db):
    client, (a, b), head = await paced_ledger(aiohttp_client, settings, pause=0.3)
    async with appends_held_up(db):
        write = asyncio.ensure_future(client.post("/v1/transfers", json=transfer_body(a, b, "1.00")))
        await wait_for_blocked_backend(db)
        started = time.monotonic()
        streamed = await lines(await client.get("/v1/events"))
        waited = time.monotonic() - started
        assert not write.done()  # the stream moved on while the write still waited
    assert [e["seq"] for e in streamed] == list(range(1, head + 1))
    assert waited >= 2 * 0.3 * 0.9  # before each of the two pages after the first (a timer may fire a little early)
    assert (await write).status == 201


async def test_a_stream_does_not_wait_when_no_write_is_waiting(aiohttp_client, settings):
    client, _, head = await paced_ledger(aiohttp_client, settings, pause=600)
    started = time.monotonic()
    streamed = await lines(await client.get("/v1/events"))
    assert len(streamed) == head
    assert time.monotonic() - started < 60


# -- following the log --------------------------------------------------------


@pytest.fixture
def settings(database_url):
    # Short keepalives so that idle followers are seen in a test's time.
    return Settings(database_url=database_url, stream_keepalive=0.05, stream_pool_size=2, stream_wait=0.2)


async def read_events(response, count):
    """The next ``count`` events of a following stream (skipping keepalive lines)."""
    events = []
    while len(events) < count:
        line = await asyncio.wait_for(response.content.readline(), timeout=10)
        assert line, "the stream ended"
        if line.strip():
            events.append(msgspec.json.decode(line))
    return events


async def test_a_follower_sees_every_event_appended_after_it_connected_once(client, open_account, db):
    a, b = await open_account(), await open_account()
    response = await client.get("/v1/events", params={"follow": "true"})
    assert (await read_events(response, 2))[-1]["seq"] == 2
    bodies = [transfer_body(a, b, "1.00") for _ in range(60)]
    # Concurrent writers, while the follower is reading.
    reading = asyncio.ensure_future(read_events(response, len(bodies)))
    statuses = await asyncio.gather(*(client.post("/v1/transfers", json=body) for body in bodies))
    assert {r.status for r in statuses} == {201}
    seen = await reading
    assert [e["seq"] for e in seen] == list(range(3, 3 + len(bodies)))
    assert {e["stream_id"] for e in seen} == {body["id"] for body in bodies}
    response.close()


async def test_a_follower_resumes_after_a_reconnect_with_no_gap_and_no_duplicate(client, open_account):
    a, b = await open_account(), await open_account()
    for _ in range(5):
        await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))
    first = await client.get("/v1/events", params={"follow": "true"})
    seen = await read_events(first, 4)
    first.close()
    for _ in range(3):
        await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))
    again = await client.get("/v1/events", params={"follow": "true", "after_seq": str(seen[-1]["seq"])})
    seen += await read_events(again, 6)
    assert [e["seq"] for e in seen] == list(range(1, 11))
    again.close()


async def test_a_follower_gets_the_events_after_the_feed_lost_its_database_connection(client, open_account, db):
    a, b = await open_account(), await open_account()
    response = await client.get("/v1/events", params={"follow": "true"})
    await read_events(response, 2)
    # An event the follower takes from the feed: the feed is listening.
    assert (await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))).status == 201
    await read_events(response, 1)
    feed = "FROM pg_stat_activity WHERE application_name = 'ledger-feed' AND datname = current_database()"
    assert await db.fetchval(f"SELECT count(pg_terminate_backend(pid)) {feed}") == 1

    body = transfer_body(a, b, "1.00")
    assert (await client.post("/v1/transfers", json=body)).status == 201

    async with asyncio.timeout(20):  # keepalive lines come meanwhile, and read_events skips them
        seen = await read_events(response, 1)
    assert [e["stream_id"] for e in seen] == [body["id"]]
    response.close()


async def test_a_follower_gets_the_events_after_the_feeds_database_connection_stopped_answering(service, tmp_path):
    served = await service(LEDGER_STREAM_KEEPALIVE="0.5", LEDGER_ACCESS_LOG="off")
    async with aiohttp.ClientSession() as session:
        a, b = [
            await (await session.post(f"{served.url}/v1/accounts", json={"currency": "USD", "scale": 2})).json()
            for _ in range(2)
        ]
        response = await session.get(f"{served.url}/v1/events", params={"follow": "true"})
        await read_events(response, 2)
        # The feed's backend stops, its socket open: as a hung host or a cut network leaves it.
        _, _, _, port, sockets = (tmp_path / "data" / "postmaster.pid").read_text().splitlines()[:5]
        server = await asyncpg.connect(host=sockets, port=int(port), user="postgres", database="postgres")
        try:
            feed = await server.fetchval("SELECT pid FROM pg_stat_activity WHERE application_name = 'ledger-feed'")
        finally:
            await server.close()
        os.kill(feed, signal.SIGSTOP)
        try:
            body = transfer_body(a, b, "1.00")
            assert (await session.post(f"{served.url}/v1/transfers", json=body)).status == 201
            async with asyncio.timeout(ANSWER_WITHIN + 20):
                seen = await read_events(response, 1)
        finally:
            os.kill(feed, signal.SIGCONT)
        assert [e["stream_id"] for e in seen] == [body["id"]]
        response.close()
    assert await served.stop() == 0, served.log
    assert f"the event feed lost its connection: the database did not answer in {ANSWER_WITHIN:g} s" in served.log


async def test_an_idle_follower_gets_keepalive_lines(client):
    response = await client.get("/v1/events", params={"follow": "true"})
    line = await asyncio.wait_for(response.content.readline(), timeout=10)
    assert line == b"\n"
    response.close()


async def test_a_client_that_leaves_mid_stream_gives_its_connection_back(client, open_account):
    await open_account()
    response = await client.get("/v1/events", params={"follow": "true"})
    await read_events(response, 1)
    assert client.app[STREAMS].count == 1
    response.close()
    # The next keepalive write fails and ends the stream.
    await asyncio.wait_for(client.app[STREAMS].wait_idle(), timeout=10)
    pool = client.app[STREAM_POOL]
    assert pool.get_idle_size() == pool.get_size()


async def test_a_client_that_leaves_while_lines_are_read_gives_a_working_connection_back(client, open_account, db):
    a, b = await open_account(), await open_account()
    for _ in range(2):
        batch = {"transfers": [transfer_body(a, b, "1.00", metadata={"pad": "x" * 400}) for _ in range(8190)]}
        assert (await client.post("/v1/transfer-batches", json=batch)).status == 200
    # More lines than the sockets between hold: the service is still reading when the client leaves.
    response = await client.get("/v1/events")
    assert (await response.content.readline()).startswith(b'{"seq":1,')
    response.close()
    await asyncio.wait_for(client.app[STREAMS].wait_idle(), timeout=10)
    pool = client.app[STREAM_POOL]
    assert pool.get_idle_size() == pool.get_size()
    # Every connection of the pool serves the next streams.
    head = await db.fetchval("SELECT seq FROM ledger_head")
    for _ in range(pool.get_max_size() + 1):
        tail = await lines(await client.get("/v1/events", params={"after_seq": str(head - 2)}))
        assert [e["seq"] for e in tail] == [head - 1, head]


async def test_an_exhausted_stream_pool_answers_503_after_a_bounded_wait(client):
    pool = client.app[STREAM_POOL]
    held = [await pool.acquire() for _ in range(pool.get_max_size())]  # as long streams would
    response = await client.get("/v1/events")
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"]["code"] == "unavailable"
    # Writes do not use the stream pool: they go on while streams hold it all.
    assert (await client.post("/v1/accounts", json={"currency": "USD", "scale": 2})).status == 201
    for conn in held:
        await pool.release(conn)


async def test_followers_hold_no_stream_connection_once_caught_up(client, open_account):
    followers = [await client.get("/v1/events", params={"follow": "true"}) for _ in range(5)]
    await open_account()
    for follower in followers:
        assert (await read_events(follower, 1))[0]["seq"] == 1
    pool = client.app[STREAM_POOL]
    assert pool.get_idle_size() == pool.get_size()  # five followers, a pool of two, all idle
    for follower in followers:
        follower.close()


async def test_many_followers_each_get_every_event_in_order_from_one_read_per_page(client, open_account):
    followers = [await client.get("/v1/events", params={"follow": "true"}) for _ in range(50)]
    a, b = await open_account(), await open_account()
    reads_before = client.app[FEED].reads
    bodies = [transfer_body(a, b, "1.00") for _ in range(100)]
    readings = [asyncio.ensure_future(read_events(f, 2 + len(bodies))) for f in followers]
    statuses = await asyncio.gather(*(client.post("/v1/transfers", json=body) for body in bodies))
    assert {r.status for r in statuses} == {201}
    for seen in await asyncio.gather(*readings):
        assert [e["seq"] for e in seen] == list(range(1, 3 + len(bodies)))
    # One read of the log per new head, whatever the number of followers.
    assert client.app[FEED].reads - reads_before <= len(bodies) + 2
    for follower in followers:
        follower.close()


async def test_without_followers_the_feed_keeps_up_with_the_head_from_notifications_alone(client, open_account, db):
    # Each append's NOTIFY tells the head it left: with no one to hand pages
    # to, the feed moves there without a query of its own.
    feed = client.app[FEED]
    a, b = await open_account(), await open_account()
    last_query = "SELECT query_start FROM pg_stat_activity WHERE application_name = 'ledger-feed'"
    await feed_at_head(feed, db)
    before = await db.fetchval(last_query)
    for _ in range(5):
        assert (await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))).status == 201
    await feed_at_head(feed, db)
    assert await db.fetchval(last_query) == before


async def feed_at_head(feed, db, timeout: float = 10.0) -> None:
    """Wait until ``feed`` has taken in the head of the log."""
    head = await db.fetchval("SELECT seq FROM ledger_head")
    deadline = time.monotonic() + timeout
    while feed.position != head:
        assert time.monotonic() < deadline, f"the feed is at {feed.position}, the head at {head}"
        await asyncio.sleep(0.01)


async def test_a_follower_that_stops_reading_is_cut_off_and_the_others_go_on(
    client, open_account, aiohttp_client, settings, database_url
):
    slow_app = create_app(dataclasses.replace(settings, follow_buffer=64 * 1024))
    slow_client = await aiohttp_client(slow_app)
    a, b = await open_account(), await open_account()
    # A client that sends its request and never reads: the socket's buffers
    # fill, the stream's writes wait, and the feed's pages pile up for it.
    host, port = slow_client.server.host, slow_client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /v1/events?follow=true HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    reading = await slow_client.get("/v1/events", params={"follow": "true"})
    await read_events(reading, 2)
    subscriptions = slow_app[FEED]._subscriptions
    for _ in range(60):  # batches until the silent one falls past its buffer
        items = [transfer_body(a, b, "0.01", metadata={"pad": "x" * 900}) for _ in range(500)]
        assert (await client.post("/v1/transfer-batches", json={"transfers": items})).status == 200
        await read_events(reading, len(items))  # the reading follower keeps up
        if any(s.cut for s in subscriptions):
            break
    [cut] = [s for s in subscriptions if s.cut]
    assert cut.buffered == 0 and not cut.pages  # it holds nothing any more
    # Once the silent client reads, it gets a gapless run and a last line saying why it ends.
    raw = await asyncio.wait_for(reader.read(), timeout=30)
    body = raw.split(b"\r\n\r\n", 1)[1]
    lines = [line for line in _dechunked(body).splitlines() if line.strip()]
    last = msgspec.json.decode(lines[-1])
    assert last["error"]["code"] == "unavailable" and "cut off" in last["error"]["message"]
    seqs = [msgspec.json.decode(line)["seq"] for line in lines[:-1]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert f"after_seq={seqs[-1]}" in last["error"]["message"]
    writer.close()
    reading.close()


def _dechunked(body: bytes) -> bytes:
    """An HTTP/1.1 chunked body, its chunks joined."""
    out, rest = b"", body
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        if int(size, 16) == 0:
            break
        out, rest = out + rest[: int(size, 16)], rest[int(size, 16) + 2 :]
    return out


async def test_following_streams_end_cleanly_when_the_service_stops(database_url, aiohttp_server):
    server = await aiohttp_server(create_app(Settings(database_url=database_url)))
    async with aiohttp.ClientSession() as session:
        async with session.get(server.make_url("/v1/events"), params={"follow": "true"}) as response:
            assert response.status == 200
            stopping = asyncio.ensure_future(server.close())
            # The stream ends with its final chunk: reading to the end succeeds.
            assert await asyncio.wait_for(response.read(), timeout=20) == b""
            await stopping


async def test_streams_are_cut_at_the_stops_deadline_and_one_that_begins_later_as_it_begins(caplog):
    streams = OpenStreams()
    opened = asyncio.Event()

    async def a_stream() -> None:
        with streams.open("/v1/events"):
            opened.set()
            await asyncio.get_running_loop().create_future()  # never done of itself

    running = asyncio.create_task(a_stream())
    await opened.wait()
    streams.cut_after(0)
    async with asyncio.timeout(10):
        with pytest.raises(asyncio.CancelledError):
            await running
        assert streams.past_deadline
        later = asyncio.create_task(a_stream())  # as a stream whose connection came late
        with pytest.raises(asyncio.CancelledError):
            await later
    assert streams.count == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "ledger.api.stream_state"]
    assert warnings == [
        "cutting 1 stream(s) still running at the stop's LEDGER_SHUTDOWN_TIMEOUT",
        "cutting a stream that began after the stop's LEDGER_SHUTDOWN_TIMEOUT",
    ]


async def test_a_stream_whose_connection_comes_after_the_stops_deadline_is_refused_503(database_url, aiohttp_server):
    settings = Settings(database_url=database_url, stream_pool_size=1, stream_wait=30, shutdown_timeout=0)
    server = await aiohttp_server(create_app(settings))
    app = server.app
    held = await app[STREAM_POOL].acquire()  # the one stream connection, as a long stream holds it
    async with aiohttp.ClientSession() as session:
        waiting = asyncio.ensure_future(session.get(server.make_url("/v1/events")))
        async with asyncio.timeout(10):
            while not server.runner.server.requests_count:  # taken: it waits for a connection
                await asyncio.sleep(0.01)
            stopping = asyncio.ensure_future(server.close())
            while not app[STREAMS].past_deadline:
                await asyncio.sleep(0.01)
        await app[STREAM_POOL].release(held)
        response = await waiting
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["error"]["message"].startswith("the service is stopping")
        await stopping


async def test_a_stop_with_no_stream_open_cuts_nothing_and_says_nothing_of_streams(service, database_url):
    served = await service(LEDGER_DATABASE_URL=database_url, LEDGER_SHUTDOWN_TIMEOUT="0")

    assert await served.stop() == 0, served.log
    assert "stream" not in served.log


async def test_an_accounts_entries_are_a_range_scan_of_the_primary_key(db):
    # Plan as if the table were large, so the planner cannot prefer a scan of all of it.
    await db.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
    plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + ENTRY_PAGE, 0, 1000, uuid.uuid4(), 2))
    assert "Index Scan using entries_pkey on entries" in plan
    assert "Index Cond: ((account_id = " in plan and "AND (seq > " in plan
    assert "Filter" not in plan and "Sort" not in plan


async def test_the_events_are_a_range_scan_of_the_primary_key(db):
    await db.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
    plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + EVENT_PAGE, 0, 1000))
    assert "Index Scan using events_pkey on events" in plan
    assert "Index Cond: (seq > " in plan
    assert "Filter" not in plan and "Sort" not in plan
