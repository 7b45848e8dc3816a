"""Group commit: concurrent writes share appends, yet each gets exactly its
own answer; the queue is bounded, survives a lost connection, and drains on
shutdown."""

import asyncio
import random
import socket
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from ledger.api.app import create_app
from ledger.api.keys import COALESCER
from ledger.config import Settings
from ledger.domain.commands import MakeTransfer, OpenAccount
from ledger.domain.ledger import Recorded
from ledger.domain.model import AccountFlags
from ledger.store.coalescer import Coalescer
from ledger.store.connection import SEND_BUFFER
from ledger.store.retry import RetryPolicy, Unavailable
from ledger.store.write_path import AppendRequest
from ledger.store.writer import WRITER_NAME, Writer
from tests.conftest import (
    appends_held_up,
    assert_log_matches_projections,
    kill_writer,
    transfer_body,
    wait_for_blocked_backend,
)


async def error_code(response):
    return (await response.json())["error"]["code"]


async def test_concurrent_mixed_requests_each_get_their_own_answer(client, open_account, fund, db):
    free = [await open_account() for _ in range(4)]
    wallet = await open_account(flags={"debits_must_not_exceed_credits": True})
    await fund(wallet, "50.00")
    rng = random.Random(9)
    cases = []  # (body, expectation)
    for _ in range(80):
        cases.append((transfer_body(*rng.sample(free, 2), "1.00"), "valid"))
    for _ in range(30):
        cases.append((transfer_body(wallet, free[0], "10.00"), "limited"))  # at most 5 fit
    for _ in range(20):
        cases.append(({**transfer_body(free[0], free[1], "1.00"), "debit_account_id": str(uuid.uuid4())}, "unknown"))
    duplicated = transfer_body(free[1], free[2], "3.00")
    cases += [(duplicated, "duplicate")] * 15
    conflicting = [{**transfer_body(free[2], free[3], "1.00"), "amount": f"{n + 1}.00"} for n in range(15)]
    same_id = conflicting[0]["id"]
    cases += [({**body, "id": same_id}, "conflict") for body in conflicting]
    rng.shuffle(cases)

    responses = await asyncio.gather(*(client.post("/v1/transfers", json=body) for body, _ in cases))

    by_kind: dict[str, Counter] = {}
    for (body, kind), response in zip(cases, responses):
        answer = response.status if response.status < 400 else (response.status, await error_code(response))
        if response.status == 200:
            answer = (200, response.headers.get("Idempotent-Replayed"))
        if response.status in (200, 201):
            assert (await response.json())["id"] == body["id"]
        by_kind.setdefault(kind, Counter())[answer] += 1
    assert by_kind["valid"] == Counter({201: 80})
    assert by_kind["limited"] == Counter({201: 5, (422, "exceeds_credits"): 25})
    assert by_kind["unknown"] == Counter({(422, "debit_account_not_found"): 20})
    assert by_kind["duplicate"] == Counter({201: 1, (200, "true"): 14})
    assert by_kind["conflict"] == Counter({201: 1, (409, "exists_with_different_fields"): 14})

    accepted = 80 + 5 + 1 + 1
    logged = await db.fetchval("SELECT count(*) FROM events WHERE type = 'transfer_posted'")
    assert logged == accepted + 1  # and the funding transfer
    await assert_log_matches_projections(db)
    # The requests really did share appends.
    coalescer = client.app[COALESCER]
    assert coalescer.appends < coalescer.requests


async def open_two(client):
    return [await (await client.post("/v1/accounts", json={"currency": "USD", "scale": 2})).json() for _ in "ab"]


async def test_a_full_queue_answers_503_at_once_and_recovers(database_url, aiohttp_client, db):
    client = await aiohttp_client(create_app(Settings(database_url=database_url, write_queue=3)))
    a, b = await open_two(client)
    coalescer = client.app[COALESCER]
    async with appends_held_up(db):
        in_flight = asyncio.ensure_future(client.post("/v1/transfers", json=transfer_body(a, b, "1.00")))
        await wait_for_blocked_backend(db)
        queued = [
            asyncio.ensure_future(client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))) for _ in range(3)
        ]
        while coalescer.queued < 3:
            await asyncio.sleep(0.01)
        refused = await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))
        assert refused.status == 503
        assert refused.headers["Retry-After"] == "1"
        assert await error_code(refused) == "unavailable"
    assert [r.status for r in await asyncio.gather(in_flight, *queued)] == [201] * 4
    assert (await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))).status == 201
    assert await db.fetchval("SELECT count(*) FROM transfers") == 5


async def test_a_batch_larger_than_the_queue_passes_when_the_queue_is_empty(database_url, aiohttp_client, db):
    client = await aiohttp_client(create_app(Settings(database_url=database_url, write_queue=2)))
    a, b = await open_two(client)

    response = await client.post(
        "/v1/transfer-batches", json={"transfers": [transfer_body(a, b, "1.00") for _ in range(10)]}
    )

    assert response.status == 200, await response.text()
    assert await db.fetchval("SELECT count(*) FROM transfers") == 10


async def test_a_connection_killed_mid_append_is_retried_on_a_new_one(client, open_account, db):
    a, b = await open_account(), await open_account()
    async with appends_held_up(db):
        writes = [asyncio.ensure_future(client.post("/v1/transfers", json=transfer_body(a, b, "1.00")))]
        await wait_for_blocked_backend(db)
        writes.append(asyncio.ensure_future(client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))))
        assert await kill_writer(db) == 1
    assert [r.status for r in await asyncio.gather(*writes)] == [201, 201]
    await assert_log_matches_projections(db)


async def test_a_killed_append_that_may_not_retry_fails_alone(database_url, aiohttp_client, db):
    client = await aiohttp_client(create_app(Settings(database_url=database_url, retry=RetryPolicy(attempts=1))))
    a, b = await open_two(client)
    coalescer = client.app[COALESCER]
    async with appends_held_up(db):
        doomed = asyncio.ensure_future(client.post("/v1/transfers", json=transfer_body(a, b, "1.00")))
        await wait_for_blocked_backend(db)
        later = asyncio.ensure_future(client.post("/v1/transfers", json=transfer_body(a, b, "1.00")))
        while coalescer.queued < 1:
            await asyncio.sleep(0.01)
        assert await kill_writer(db) == 1
    doomed, later = await asyncio.gather(doomed, later)
    assert (doomed.status, await error_code(doomed)) == (503, "unavailable")
    # The next append starts clean, on a new connection.
    assert later.status == 201
    assert await db.fetchval("SELECT count(*) FROM transfers") == 1


async def test_closing_drains_the_queue_and_answers_every_request(writer, db):
    coalescer = Coalescer(writer, max_queued=100)
    coalescer.start()
    requests = [AppendRequest([OpenAccount(uuid.uuid4(), "USD", 2, AccountFlags(), {})]) for _ in range(6)]
    async with appends_held_up(db):
        first = asyncio.ensure_future(coalescer.submit(requests[:1]))
        await wait_for_blocked_backend(db)
        rest = [asyncio.ensure_future(coalescer.submit([r])) for r in requests[1:]]
        while coalescer.queued < 5:
            await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(coalescer.close())
    await closing
    with pytest.raises(Unavailable, match="stopping"):
        await coalescer.submit(requests[:1])
    answers = [outcomes for [outcomes] in await asyncio.gather(first, *rest)]
    assert all(isinstance(o, Recorded) for outcomes in answers for o in outcomes)
    assert await db.fetchval("SELECT count(*) FROM accounts") == 6


async def test_accounts_opened_and_moved_in_one_append_are_stored_as_the_append_left_them(client, db):
    # The append writes everything in one statement, whose parts cannot see
    # each other's rows: a new account's balance must go in already moved.
    debit, credit = uuid.uuid4(), uuid.uuid4()
    commands = [
        OpenAccount(debit, "USD", 2, AccountFlags(), {}),
        OpenAccount(credit, "USD", 2, AccountFlags(), {}),
        MakeTransfer(uuid.uuid4(), debit, credit, Decimal("2.50"), "USD", None, {}),
        MakeTransfer(uuid.uuid4(), debit, credit, Decimal("1.25"), "USD", None, {}),
    ]
    [outcomes] = await client.app[COALESCER].submit([AppendRequest(commands)])

    assert all(isinstance(o, Recorded) for o in outcomes)
    rows = {
        r["account_id"]: (r["debits_posted"], r["credits_posted"], r["seq"])
        for r in await db.fetch("SELECT * FROM balances")
    }
    last_seq = outcomes[-1].record.seq
    assert rows == {debit: (Decimal("3.75"), 0, last_seq), credit: (0, Decimal("3.75"), last_seq)}
    await assert_log_matches_projections(db)


async def test_a_failed_write_queue_refuses_writes_and_says_it_is_not_ready(client, open_account, db, monkeypatch):
    a, b = await open_account(), await open_account()
    coalescer = client.app[COALESCER]

    def fault(room):
        raise RuntimeError("a bug in the queue")

    monkeypatch.setattr(coalescer, "_take", fault)
    # Bounded: without an answer, the test fails instead of waiting for ever.
    first = await asyncio.wait_for(client.post("/v1/transfers", json=transfer_body(a, b, "1.00")), 10)
    later = await asyncio.wait_for(client.post("/v1/transfers", json=transfer_body(a, b, "1.00")), 10)

    assert [(r.status, await error_code(r)) for r in (first, later)] == [(503, "unavailable")] * 2
    assert (await client.get("/health/ready")).status == 503
    assert await db.fetchval("SELECT count(*) FROM transfers") == 0


def send_buffer(writer: Writer) -> int:
    """What the kernel grants the writer's appending connection to hold in flight."""
    sock = writer._conn._transport.get_extra_info("socket")
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


async def test_the_writers_connection_holds_megabytes_in_flight_and_so_does_its_replacement(writer, db):
    # The kernel grants at most net.core.wmem_max (and reports twice what it grants).
    granted = min(SEND_BUFFER, int(Path("/proc/sys/net/core/wmem_max").read_text()))
    account = [AppendRequest([OpenAccount(uuid.uuid4(), "USD", 2, AccountFlags(), {})])]
    await writer.submit(account)
    assert send_buffer(writer) >= granted
    killed = await writer_pids(db)

    assert await kill_writer(db) == 1
    await writer.submit(account)  # on a new connection

    replacement = await writer_pids(db)
    assert len(replacement) == 1 and replacement != killed
    assert send_buffer(writer) >= granted


async def writer_pids(db) -> set[int]:
    """The backends of the writer's appending connections."""
    rows = await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1", WRITER_NAME
    )
    return {r["pid"] for r in rows}
