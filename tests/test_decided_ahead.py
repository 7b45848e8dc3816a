"""Batches decided ahead of the lock, while the append before them is recorded:
written as decided only while the head of the log is the one they were
decided after, and decided again under the lock otherwise."""

import asyncio
import uuid
from decimal import Decimal

import pytest

from ledger.api.keys import COALESCER, WRITER
from ledger.domain.codes import Code
from ledger.domain.commands import CloseAccount, Command, MakeTransfer, OpenAccount, PostTransfer, VoidTransfer
from ledger.domain.ledger import Recorded, Refused
from ledger.domain.model import AccountFlags
from ledger.store import append as append_module
from ledger.store import coalescer as coalescer_module
from ledger.store import copying as copying_module
from ledger.store.append import HEAD, AppendRequest, Batch
from ledger.store.rebuild import rebuild_projections
from ledger.store.reconcile import reconcile
from ledger.store.retry import RetryPolicy
from ledger.store.writer import READER_NAME, Writer
from tests.conftest import (
    appends_held_up,
    assert_log_matches_projections,
    assert_no_flag_violated,
    kill_writer,
    transfer_body,
    wait_for_blocked_backend,
)


def transfer(debit: uuid.UUID, credit: uuid.UUID, amount: str) -> MakeTransfer:
    return MakeTransfer(uuid.uuid4(), debit, credit, Decimal(amount), "USD", None, {})


def one_request(*commands: Command) -> list[AppendRequest]:
    return [AppendRequest(list(commands))]


@pytest.fixture
async def wallet_and_shop(writer: Writer) -> tuple[uuid.UUID, uuid.UUID, Batch]:
    """A wallet that may not go below zero, paid 10.00 by a shop; and the
    batch that recorded it, for the next one to be decided after."""
    wallet, shop = uuid.uuid4(), uuid.uuid4()
    recorded = await writer.record(
        one_request(
            OpenAccount(wallet, "USD", 2, AccountFlags(debits_must_not_exceed_credits=True), {}),
            OpenAccount(shop, "USD", 2, AccountFlags(), {}),
            transfer(shop, wallet, "10.00"),
        )
    )
    return wallet, shop, recorded


async def decide_ahead(writer: Writer, after: Batch, *commands: Command) -> tuple[Batch, list[AppendRequest]]:
    batch = Batch.after(after, limit=coalescer_module.CHAIN_LIMIT)
    requests = one_request(*commands)
    await writer.decide(batch, requests)
    return batch, requests


async def test_decisions_ahead_on_what_the_append_before_made_are_written_as_decided(writer, db, wallet_and_shop):
    # Holds made by the append in flight are posted, voided and closed over
    # by the batch decided after it, before any of it is in the database.
    wallet, shop, first = wallet_and_shop
    spare = uuid.uuid4()
    held, voided = uuid.uuid4(), uuid.uuid4()
    in_flight, in_flight_requests = await decide_ahead(
        writer,
        first,
        OpenAccount(spare, "USD", 2, AccountFlags(), {}),
        MakeTransfer(held, wallet, shop, Decimal("4.00"), "USD", None, {}, pending=True),
        MakeTransfer(voided, wallet, shop, Decimal("3.00"), "USD", None, {}, pending=True),
    )
    after, after_requests = await decide_ahead(
        writer,
        in_flight.seal(),
        PostTransfer(held, Decimal("2.50")),
        VoidTransfer(voided),
        CloseAccount(spare),
        transfer(wallet, shop, "7.50"),  # fits only once the holds are released
    )

    assert await writer.record(in_flight_requests, in_flight) is in_flight
    recorded = await writer.record(after_requests, after.seal())

    assert recorded is after and writer.decided_again == 0
    assert all(isinstance(o, Recorded) for o in recorded.results[0])
    assert await debits_and_credits(db, wallet) == (Decimal("10.00"), Decimal("10.00"))
    assert await db.fetchval("SELECT closed FROM accounts WHERE id = $1", spare)
    await assert_log_matches_projections(db)
    await assert_no_flag_violated(db)


async def debits_and_credits(db, account: uuid.UUID) -> tuple[Decimal, Decimal]:
    row = await db.fetchrow("SELECT debits_posted, credits_posted FROM balances WHERE account_id = $1", account)
    return row["debits_posted"], row["credits_posted"]


async def test_a_sealed_batch_is_written_as_sealed_whatever_is_decided_after_it(writer, db):
    # The batch decided next shares the ledger, and may move an account the
    # sealed one opened before the sealed one is written.
    shop, customer = uuid.uuid4(), uuid.uuid4()
    first = await writer.fresh()
    requests = one_request(
        OpenAccount(shop, "USD", 2, AccountFlags(), {}),
        OpenAccount(customer, "USD", 2, AccountFlags(), {}),
        transfer(shop, customer, "3.00"),
    )
    await writer.decide(first, requests)
    await decide_ahead(writer, first.seal(), transfer(shop, customer, "5.00"))  # never recorded

    await writer.record(requests, first)

    assert await debits_and_credits(db, customer) == (Decimal("0.00"), Decimal("3.00"))
    await assert_log_matches_projections(db)


async def test_a_batch_decided_ahead_is_written_as_decided_while_the_head_stands(writer, db, wallet_and_shop):
    wallet, shop, first = wallet_and_shop
    ahead, requests = await decide_ahead(writer, first, transfer(wallet, shop, "8.00"))

    recorded = await writer.record(requests, ahead.seal())

    assert recorded is ahead
    assert writer.decided_again == 0
    [[outcome]] = recorded.results
    assert isinstance(outcome, Recorded)
    assert await debits_and_credits(db, wallet) == (Decimal("8.00"), Decimal("10.00"))
    await assert_log_matches_projections(db)


async def test_an_append_by_another_process_meanwhile_has_it_decided_again(
    writer, db, database_url, clock, wallet_and_shop
):
    wallet, shop, first = wallet_and_shop
    ahead, requests = await decide_ahead(writer, first, transfer(wallet, shop, "8.00"))
    assert isinstance(ahead.results[0][0], Recorded)  # 8.00 of the 10.00 would fit
    other = Writer(database_url, policy=RetryPolicy(), clock=clock)
    try:
        [[spent]] = await other.append(one_request(transfer(wallet, shop, "5.00")))
    finally:
        await other.close()
    assert isinstance(spent, Recorded)

    recorded = await writer.record(requests, ahead.seal())

    assert recorded is not ahead
    assert writer.decided_again == 1
    [[outcome]] = recorded.results
    assert isinstance(outcome, Refused) and outcome.code == Code.EXCEEDS_CREDITS
    assert await debits_and_credits(db, wallet) == (Decimal("5.00"), Decimal("10.00"))
    await assert_log_matches_projections(db)
    await assert_no_flag_violated(db)


async def test_a_refusal_decided_on_a_head_since_moved_is_decided_again(
    writer, db, database_url, clock, wallet_and_shop
):
    wallet, shop, first = wallet_and_shop
    ahead, requests = await decide_ahead(writer, first, transfer(wallet, shop, "15.00"))
    assert isinstance(ahead.results[0][0], Refused)  # the wallet holds 10.00
    other = Writer(database_url, policy=RetryPolicy(), clock=clock)
    try:
        await other.append(one_request(transfer(shop, wallet, "5.00")))
    finally:
        await other.close()

    # The batch records nothing, yet its refusal stood on the old head.
    recorded = await writer.record(requests, ahead.seal())

    assert writer.decided_again == 1
    [[outcome]] = recorded.results
    assert isinstance(outcome, Recorded)
    assert await debits_and_credits(db, wallet) == (Decimal("15.00"), Decimal("15.00"))
    await assert_log_matches_projections(db)


async def test_two_processes_writing_from_one_head_at_once_record_both(
    writer, db, database_url, clock, wallet_and_shop
):
    wallet, shop, _ = wallet_and_shop
    other = Writer(database_url, policy=RetryPolicy(), clock=clock)
    try:
        batches = [await w.fresh() for w in (writer, other)]
        requests = [one_request(transfer(wallet, shop, "6.00")) for _ in batches]
        for w, batch, request in zip((writer, other), batches, requests):
            await w.decide(batch, request)
        assert batches[0].basis == batches[1].basis
        assert all(isinstance(b.results[0][0], Recorded) for b in batches)  # each alone would fit

        # Both written at once: one waits for the other's head, then finds it moved.
        recorded = await asyncio.gather(*(w.record(r, b.seal()) for w, r, b in zip((writer, other), requests, batches)))
        decided_again = writer.decided_again + other.decided_again
    finally:
        await other.close()

    assert decided_again == 1
    outcomes = sorted(type(b.results[0][0]).__name__ for b in recorded)
    assert outcomes == ["Recorded", "Refused"]  # 12.00 of 10.00 never both
    assert await debits_and_credits(db, wallet) == (Decimal("6.00"), Decimal("10.00"))
    await assert_log_matches_projections(db)
    await assert_no_flag_violated(db)


async def repair(db) -> None:
    assert (await reconcile(db, repair=True)).repaired == 1


async def rebuild(db) -> None:
    await rebuild_projections(db)


@pytest.mark.parametrize("rewrite", [repair, rebuild])
async def test_projections_rewritten_meanwhile_have_it_decided_again(rewrite, writer, db, wallet_and_shop):
    wallet, shop, _ = wallet_and_shop
    # The wallet's stored balance is wrong, and the next append reads it.
    await db.execute("UPDATE balances SET credits_posted = 1000 WHERE account_id = $1", wallet)
    touched = await writer.record(one_request(transfer(shop, wallet, "1.00")))
    ahead, requests = await decide_ahead(writer, touched, transfer(wallet, shop, "500.00"))
    assert isinstance(ahead.results[0][0], Recorded)  # against the wrong balance
    epoch = (await db.fetchrow(HEAD))["epoch"]

    await rewrite(db)  # puts the log's 11.00 back
    recorded = await writer.record(requests, ahead.seal())

    assert (await db.fetchrow(HEAD))["epoch"] == epoch + 1
    assert recorded is not ahead
    [[outcome]] = recorded.results
    assert isinstance(outcome, Refused) and outcome.code == Code.EXCEEDS_CREDITS
    await assert_log_matches_projections(db)
    await assert_no_flag_violated(db)


async def writes_behind_a_held_up_append(client, db, a, b, count: int = 10) -> list[int]:
    """POST a transfer whose append the test holds up, and ``count`` more
    that queue behind it; their statuses once all are answered."""
    coalescer = client.app[COALESCER]
    async with appends_held_up(db):
        first = asyncio.ensure_future(client.post("/v1/transfers", json=transfer_body(a, b, "1.00")))
        await wait_for_blocked_backend(db)
        queued = [
            asyncio.ensure_future(client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))) for _ in range(count)
        ]
        while coalescer.queued < count:
            await asyncio.sleep(0.01)
    return [r.status for r in await asyncio.gather(first, *queued)]


async def test_a_lone_write_on_an_idle_service_is_recorded_without_the_table_lock(client, open_account, db):
    a, b = await open_account(), await open_account()
    async with db.transaction():
        # Conflicts with the append lock (EXCLUSIVE), not with writing the head row.
        await db.execute("LOCK TABLE ledger_head IN ROW SHARE MODE")
        response = await asyncio.wait_for(client.post("/v1/transfers", json=transfer_body(a, b, "1.00")), 10)

    assert response.status == 201
    assert client.app[WRITER].decided_again == 0
    await assert_log_matches_projections(db)


async def test_writes_queued_behind_an_append_are_decided_ahead(client, open_account, db):
    a, b = await open_account(), await open_account()

    assert await writes_behind_a_held_up_append(client, db, a, b) == [201] * 11

    assert client.app[COALESCER].decided_ahead >= 1
    assert client.app[WRITER].decided_again == 0
    await assert_log_matches_projections(db)


async def test_a_lost_reading_connection_costs_only_decisions_ahead_and_is_replaced(client, open_account, db):
    a, b = await open_account(), await open_account()
    coalescer = client.app[COALESCER]
    await writes_behind_a_held_up_append(client, db, a, b)
    decided_ahead = coalescer.decided_ahead
    assert decided_ahead >= 1

    assert await kill_writer(db, READER_NAME) == 1
    statuses = [
        *await writes_behind_a_held_up_append(client, db, a, b),
        *await writes_behind_a_held_up_append(client, db, a, b),
    ]

    assert statuses == [201] * 22
    assert coalescer.decided_ahead > decided_ahead
    await assert_log_matches_projections(db)


async def test_a_batch_decided_after_one_never_recorded_is_decided_again(writer, db, wallet_and_shop):
    wallet, shop, first = wallet_and_shop
    lost, _ = await decide_ahead(writer, first, transfer(wallet, shop, "8.00"))  # its append fails
    ahead, requests = await decide_ahead(writer, lost.seal(), transfer(wallet, shop, "5.00"))
    assert isinstance(ahead.results[0][0], Refused)  # after the 8.00 that never happened

    recorded = await writer.record(requests, ahead.seal())

    assert recorded is not ahead
    [[outcome]] = recorded.results
    assert isinstance(outcome, Recorded)
    assert await debits_and_credits(db, wallet) == (Decimal("5.00"), Decimal("10.00"))
    await assert_log_matches_projections(db)


async def test_a_ledger_carried_past_the_limit_keeps_what_the_append_in_flight_changed(
    client, open_account, fund, db, monkeypatch
):
    # Cut down before every batch: each is decided on what the append in
    # flight left the wallet (not yet in the database) and the rest read afresh.
    monkeypatch.setattr(coalescer_module, "CHAIN_LIMIT", 0)
    wallet, shop = await open_account(flags={"debits_must_not_exceed_credits": True}), await open_account()
    await fund(wallet, "5.00")

    statuses = await writes_behind_a_held_up_append(client, db, wallet, shop)

    assert statuses == [201] * 5 + [422] * 6
    assert client.app[COALESCER].decided_ahead > 0
    await assert_no_flag_violated(db)
    await assert_log_matches_projections(db)


async def test_a_full_batch_decided_ahead_is_sealed_with_its_copy_text_while_the_one_before_is_recorded(
    client, open_account, db, monkeypatch
):
    monkeypatch.setattr(coalescer_module, "MAX_COMMANDS", 4)
    monkeypatch.setattr(append_module, "COPY_FROM", 1)
    monkeypatch.setattr(copying_module, "CHUNK", 2)  # text made a chunk at a time
    a, b = await open_account(), await open_account()

    statuses = await writes_behind_a_held_up_append(client, db, a, b, count=8)

    assert statuses == [201] * 9
    assert client.app[COALESCER].sealed_ahead >= 1
    assert client.app[WRITER].decided_again == 0
    await assert_log_matches_projections(db)
