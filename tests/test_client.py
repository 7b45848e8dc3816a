"""ledger.client: the typed async client, against the real service. Decimal
amounts, MessagePack by default, LedgerError with the code, pages and
streams as async iterators, and retries that never move money twice."""

import ast
import asyncio
import os
import signal
import sys
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from ledger import client as client_module
from ledger.api import responses
from ledger.api.app import create_app
from ledger.api.keys import COALESCER
from ledger.client import Account, Balance, BalanceAsOf, Flags, LedgerClient, LedgerError, Transfer
from ledger.config import Settings
from tests.conftest import appends_held_up, wait_for_blocked_backend


@pytest.fixture(params=["msgpack", "json"])
async def ledger(request, client):
    """A LedgerClient on the test's service, in each encoding."""
    async with LedgerClient(str(client.make_url("")), encoding=request.param, retry_for=5) as ledger:
        yield ledger


@pytest.fixture
async def pair(ledger):
    return await ledger.create_account("USD", 2), await ledger.create_account("USD", 2)


async def test_the_readme_example_moves_money_with_decimal_amounts(ledger):
    shop = await ledger.create_account("USD", 2)
    wallet = await ledger.create_account("USD", 2)
    paid = await ledger.transfer(shop.id, wallet.id, Decimal("12.50"), "USD")

    assert isinstance(paid, Transfer) and paid.amount == Decimal("12.50")
    assert (await ledger.get_account(wallet.id)).balance.credits_posted == Decimal("12.50")


async def test_msgpack_is_the_default_encoding(client):
    seen = []

    async def on_request_end(session, context, params):
        seen.append((params.headers.get("Content-Type"), params.response.content_type))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        async with LedgerClient(str(client.make_url("")), session=session) as ledger:
            await ledger.create_account("USD", 2)

    assert seen == [("application/msgpack", "application/msgpack")]


async def test_a_refusal_raises_ledger_error_with_its_status_code_and_field(ledger, pair):
    shop, _ = pair
    limited = await ledger.create_account("USD", 2, flags=Flags(debits_must_not_exceed_credits=True))

    with pytest.raises(LedgerError) as refused:
        await ledger.transfer(limited.id, shop.id, Decimal("1.00"), "USD")
    assert (refused.value.status, refused.value.code) == (422, "exceeds_credits")

    with pytest.raises(LedgerError) as invalid:
        await ledger.transfer(shop.id, limited.id, Decimal("1.001"), "USD")
    assert (invalid.value.code, invalid.value.status) == ("amount_scale_exceeded", 422)

    with pytest.raises(LedgerError) as missing:
        await ledger.get_account(uuid.uuid4())
    assert (missing.value.status, missing.value.code) == (404, "account_not_found")


async def test_holds_are_posted_voided_and_payments_reversed(ledger, pair):
    shop, wallet = pair
    held = await ledger.transfer(shop.id, wallet.id, Decimal("10.00"), "USD", pending=True, timeout_seconds=60)
    other = await ledger.transfer(shop.id, wallet.id, Decimal("3.00"), "USD", pending=True)

    posted = await ledger.post(held.id, Decimal("7.50"))
    voided = await ledger.void(other.id)
    reversal = await ledger.reverse(held.id, amount=Decimal("2.50"))

    assert (posted.status, posted.posted_amount) == ("posted", Decimal("7.50"))
    assert voided.status == "voided"
    assert (reversal.reverses, reversal.amount) == (held.id, Decimal("2.50"))
    assert (await ledger.get_transfer(held.id)).reversed_amount == Decimal("2.50")


async def test_pages_are_one_async_iterator(ledger, pair, client):
    shop, wallet = pair
    made = [
        await ledger.transfer(shop.id, wallet.id, Decimal(n), "USD", metadata={"run": "pages" if n % 2 else "other"})
        for n in range(1, 8)
    ]

    found = [t.id async for t in ledger.transfers(account_id=shop.id, limit=2)]
    tagged = [t.id async for t in ledger.transfers(metadata={"run": "pages"}, order="desc")]
    accounts = [a.id async for a in ledger.accounts(currency="USD", limit=1)]

    assert found == [t.id for t in made]
    assert tagged == [t.id for t in reversed(made) if t.metadata["run"] == "pages"]
    assert set(accounts) >= {shop.id, wallet.id} and all(isinstance(i, uuid.UUID) for i in accounts)


async def test_a_batch_answers_one_result_per_item(ledger, pair):
    shop, wallet = pair
    items = [
        {"debit_account_id": shop.id, "credit_account_id": wallet.id, "amount": Decimal("1.00"), "currency": "USD"},
        {"debit_account_id": shop.id, "credit_account_id": wallet.id, "amount": Decimal("0"), "currency": "USD"},
    ]

    results = await ledger.batch(items)

    assert results[0].status == "created" and results[0].seq is not None
    assert results[1].error is not None and results[1].error.code == "amount_must_be_positive"


async def test_a_time_without_a_zone_is_refused_before_it_is_sent(ledger):
    with pytest.raises(ValueError, match="no time zone"):
        [t async for t in ledger.transfers(created_from=datetime(2026, 1, 1))]


async def test_a_batch_refused_as_a_whole_raises_ledger_error(ledger, pair):
    shop, wallet = pair
    item = {"debit_account_id": shop.id, "credit_account_id": wallet.id, "amount": "1.001x", "currency": "USD"}

    with pytest.raises(LedgerError) as refused:
        await ledger.batch([item])

    assert (refused.value.status, refused.value.code, refused.value.field) == (
        422,
        "invalid_field",
        "transfers[0].amount",
    )


async def test_streams_are_async_iterators_and_follow_goes_on(ledger, pair):
    shop, wallet = pair
    first = await ledger.transfer(shop.id, wallet.id, Decimal("1.00"), "USD")

    entries = [e async for e in ledger.entries(wallet.id)]
    assert [(e.transfer_id, e.side, e.balance.credits_posted) for e in entries] == [
        (first.id, "credit", Decimal("1.00"))
    ]

    followed = []
    async for event in ledger.events(after_seq=first.seq - 1, follow=True):
        followed.append(event)
        if len(followed) == 1:
            second = await ledger.transfer(shop.id, wallet.id, Decimal("2.00"), "USD")
        else:
            break
    assert [e.stream_id for e in followed] == [first.id, second.id]
    assert followed[1].data["amount"] == "2.00"


async def test_balance_as_of_and_reconciliation(ledger, pair):
    shop, wallet = pair
    paid = await ledger.transfer(shop.id, wallet.id, Decimal("4.00"), "USD")
    await ledger.transfer(shop.id, wallet.id, Decimal("1.00"), "USD")

    then = await ledger.balance(wallet.id, as_of_seq=paid.seq)
    report = await ledger.reconcile()

    assert isinstance(then, BalanceAsOf) and then.credits_posted == Decimal("4.00")
    assert report.ok and report.events_scanned >= 4


async def test_a_session_given_is_used_and_left_open(client):
    async with aiohttp.ClientSession() as session:
        async with LedgerClient(str(client.make_url("")), session=session) as ledger:
            await ledger.create_account("USD", 2)
        assert not session.closed


def test_the_client_structs_have_the_fields_the_service_answers_with():
    pairs = {
        client_module.Account: responses.AccountOut,
        client_module.Balance: responses.BalanceOut,
        client_module.Transfer: responses.TransferOut,
        client_module.BatchResult: responses.BatchItemOut,
        client_module.Event: responses.EventLine,
        client_module.Entry: responses.EntryLine,
        client_module.BalanceAsOf: responses.BalanceAsOf,
        client_module.Reconciliation: responses.ReportOut,
        client_module.Mismatch: responses.MismatchOut,
    }
    for ours, theirs in pairs.items():
        assert set(ours.__struct_fields__) == set(theirs.__struct_fields__), ours.__name__


def test_the_client_needs_nothing_the_service_does_not_have():
    tree = ast.parse(Path(client_module.__file__).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - set(sys.stdlib_module_names) <= {"aiohttp", "msgspec", "__future__"}


# -- retries ------------------------------------------------------------------


async def balances(db, *accounts: Account) -> list[Balance]:
    rows = [await db.fetchrow("SELECT * FROM balances WHERE account_id = $1", a.id) for a in accounts]
    return [Balance(**{k: r[k] for k in Balance.__struct_fields__}) for r in rows]


async def test_a_call_in_flight_when_the_server_restarts_is_retried_and_recorded_once(service, database_url, db):
    served = await service(LEDGER_DATABASE_URL=database_url)
    port = str(urlsplit(served.url).port)
    async with LedgerClient(served.url, retry_for=30) as ledger:
        shop, wallet = await ledger.create_account("USD", 2), await ledger.create_account("USD", 2)
        transfer_id = uuid.uuid4()
        async with appends_held_up(db):
            call = asyncio.ensure_future(ledger.transfer(shop.id, wallet.id, Decimal("5.00"), "USD", id=transfer_id))
            await wait_for_blocked_backend(db)
            os.killpg(served.process.pid, signal.SIGKILL)  # mid-call: the append never commits
            await served.process.wait()
        await service(LEDGER_DATABASE_URL=database_url, LEDGER_PORT=port)

        recorded = await call

    assert recorded.id == transfer_id and recorded.amount == Decimal("5.00")
    assert await db.fetchval("SELECT count(*) FROM transfers WHERE id = $1", transfer_id) == 1
    assert [b.credits_posted for b in await balances(db, wallet)] == [Decimal("5.00")]


class AnswerLosingProxy:
    """A TCP proxy in front of the service that, while ``lose`` is above
    zero, sends a connection's request on, waits for the head of the answer,
    and then closes the caller's connection without it: the request took
    effect and the caller cannot know."""

    def __init__(self, target: str) -> None:
        split = urlsplit(target)
        self._host, self._port = split.hostname, split.port
        self.lose = 0
        self.lost = 0

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self._host, self._port)
        losing = self.lose > 0
        forward = asyncio.ensure_future(self._pipe(reader, upstream_writer))
        try:
            if losing:
                head = await upstream_reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 ")
                self.lose -= 1
                self.lost += 1
            else:
                await self._pipe(upstream_reader, writer)
        finally:
            forward.cancel()
            writer.close()
            upstream_writer.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()


async def test_an_answer_lost_after_the_transfer_committed_is_retried_without_moving_money_twice(client, db):
    proxy = AnswerLosingProxy(str(client.make_url("")))
    url = await proxy.start()
    # A connection per request, so that the proxy loses exactly the one answer.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    try:
        async with session, LedgerClient(url, retry_for=10, session=session) as ledger:
            shop, wallet = await ledger.create_account("USD", 2), await ledger.create_account("USD", 2)
            proxy.lose = 1  # the next answer is lost, after the transfer is recorded
            recorded = await ledger.transfer(shop.id, wallet.id, Decimal("7.00"), "USD")
    finally:
        await proxy.close()

    assert proxy.lost == 1
    assert recorded.amount == Decimal("7.00")
    assert await db.fetchval("SELECT count(*) FROM transfers") == 1
    assert [b.credits_posted for b in await balances(db, wallet)] == [Decimal("7.00")]


@pytest.fixture
async def small_queue(aiohttp_client, database_url):
    """A service whose write queue holds one command."""
    return await aiohttp_client(create_app(Settings(database_url=database_url, write_queue=1)))


async def attempts_counted(session_holder: list[int]) -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()

    async def on_request_end(session, context, params):
        session_holder.append(params.response.status)

    trace.on_request_end.append(on_request_end)
    return trace


async def test_a_503_is_retried_until_it_passes(small_queue, db):
    statuses: list[int] = []
    async with aiohttp.ClientSession(trace_configs=[await attempts_counted(statuses)]) as session:
        async with LedgerClient(str(small_queue.make_url("")), session=session, retry_for=30) as ledger:
            shop, wallet = await ledger.create_account("USD", 2), await ledger.create_account("USD", 2)
            async with appends_held_up(db):
                held = asyncio.ensure_future(ledger.transfer(shop.id, wallet.id, Decimal("1.00"), "USD"))
                await wait_for_blocked_backend(db)
                queued = asyncio.ensure_future(ledger.transfer(shop.id, wallet.id, Decimal("2.00"), "USD"))
                refused = asyncio.ensure_future(ledger.transfer(shop.id, wallet.id, Decimal("3.00"), "USD"))
                while 503 not in statuses:  # the queue is full while the first append is held
                    await asyncio.sleep(0.01)
            done = await asyncio.gather(held, queued, refused)

    assert [t.amount for t in done] == [Decimal("1.00"), Decimal("2.00"), Decimal("3.00")]
    assert statuses.count(503) >= 1
    assert await db.fetchval("SELECT count(*) FROM transfers") == 3


async def test_a_503_that_outlasts_retry_for_is_raised(small_queue, db):
    async with LedgerClient(str(small_queue.make_url("")), retry_for=0.3) as ledger:
        shop, wallet = await ledger.create_account("USD", 2), await ledger.create_account("USD", 2)
        async with appends_held_up(db):
            held = asyncio.ensure_future(ledger.transfer(shop.id, wallet.id, Decimal("1.00"), "USD"))
            await wait_for_blocked_backend(db)
            queued = asyncio.ensure_future(ledger.transfer(shop.id, wallet.id, Decimal("2.00"), "USD"))
            while small_queue.app[COALESCER].queued < 1:  # the queue is full
                await asyncio.sleep(0.01)
            with pytest.raises(LedgerError) as refused:
                await ledger.transfer(shop.id, wallet.id, Decimal("3.00"), "USD")
        await asyncio.gather(held, queued)
    assert (refused.value.status, refused.value.code) == (503, "unavailable")
