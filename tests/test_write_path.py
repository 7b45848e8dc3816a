"""The write path's states and transitions (ledger.store.write_path): a
batch decided outside the lock is sealed, then written as decided only while
the head of the log is the one it was decided after, and decided again under
the lock otherwise."""

import asyncio
import uuid
from decimal import Decimal

import pytest

from ledger.api.keys import COALESCER, WRITER
from ledger.domain.codes import Code
from ledger.domain.commands import CloseAccount, Command, MakeTransfer, OpenAccount, PostTransfer, VoidTransfer
from ledger.domain.ledger import Existing, Outcome, Recorded, Refused
from ledger.domain.model import AccountFlags
from ledger.store import copying
from ledger.store.coalescer import Coalescer
from ledger.store.head import read_head
from ledger.store.rebuild import rebuild_projections
from ledger.store.reconcile import reconcile
from ledger.store.retry import RetryPolicy
from ledger.store.write_path import (
    COPY_FROM,
    AppendRequest,
    Committed,
    Copy,
    Decided,
    Pending,
    Sealed,
    Stale,
    Statement,
    Unchanged,
    seal,
    write,
)
from ledger.store.writer import READER_NAME, Writer
from tests.conftest import (
    appends_held_up,
    assert_log_matches_projections,
    assert_no_flag_violated,
    kill_writer,
    stored_rows,
    transfer_body,
    wait_for_blocked_backend,
)


def transfer(debit: uuid.UUID, credit: uuid.UUID, amount: str) -> MakeTransfer:
    return MakeTransfer(uuid.uuid4(), debit, credit, Decimal(amount), "USD", None, {})


def one_request(*commands: Command) -> list[AppendRequest]:
    return [AppendRequest(list(commands))]


def opening_wallet_and_shop(paid: str = "10.00") -> tuple[uuid.UUID, uuid.UUID, list[AppendRequest]]:
    """The ids of a wallet that may not go below zero and of a shop, and the
    request that opens both and has the shop pay the wallet ``paid``."""
    wallet, shop = uuid.uuid4(), uuid.uuid4()
    return (
        wallet,
        shop,
        one_request(
            OpenAccount(wallet, "USD", 2, AccountFlags(debits_must_not_exceed_credits=True), {}),
            OpenAccount(shop, "USD", 2, AccountFlags(), {}),
            transfer(shop, wallet, paid),
        ),
    )


@pytest.fixture
async def wallet_and_shop(writer: Writer) -> tuple[uuid.UUID, uuid.UUID, Committed]:
    """A wallet that may not go below zero, paid 10.00 by a shop; and the
    append that recorded it, for the next batch to be decided after."""
    wallet, shop, opening = opening_wallet_and_shop()
    return wallet, shop, await writer.append(Pending(opening))


async def decided_at_head(writer: Writer, *commands: Command) -> Decided:
    """``commands`` decided outside the lock against the log as it stands,
    from a ledger that holds nothing yet."""
    decided = await writer.at_head()
    await writer.decide(decided, one_request(*commands))
    return decided


async def decided_after(writer: Writer, previous: Sealed, *commands: Command, limit: int = 50_000) -> Decided:
    decided = Decided.after(previous, limit=limit)
    await writer.decide(decided, one_request(*commands))
    return decided


async def debits_and_credits(db, account: uuid.UUID) -> tuple[Decimal, Decimal]:
    row = await db.fetchrow("SELECT debits_posted, credits_posted FROM balances WHERE account_id = $1", account)
    return row["debits_posted"], row["credits_posted"]


# -- seal ---------------------------------------------------------------------


async def test_a_batch_that_records_nothing_is_sealed_unchanged_at_its_basis(writer, wallet_and_shop):
    wallet, shop, first = wallet_and_shop
    decided = await decided_after(writer, first.sealed, transfer(wallet, shop, "99.00"))  # refused

    sealed = seal(decided)

    assert isinstance(sealed.rows, Unchanged)
    assert sealed.after == decided.basis == first.head


async def test_a_batch_is_sealed_as_one_statement_below_the_copy_threshold_and_as_copy_from_it(writer, wallet_and_shop):
    wallet, shop, _ = wallet_and_shop
    batches = [await writer.at_head() for _ in range(2)]
    for decided in batches:
        await writer.decide(decided, one_request(transfer(wallet, shop, "1.00"), transfer(wallet, shop, "1.00")))

    assert isinstance(seal(batches[0], copy_from=3).rows, Statement)
    assert isinstance(seal(batches[1], copy_from=2).rows, Copy)


async def test_sealing_fixes_the_head_the_batch_leaves(writer, wallet_and_shop):
    wallet, shop, first = wallet_and_shop
    decided = await decided_after(writer, first.sealed, transfer(wallet, shop, "1.00"), transfer(wallet, shop, "2.00"))

    sealed = seal(decided)

    assert sealed.after.seq == first.head.seq + 2
    assert sealed.after.epoch == first.head.epoch
    assert sealed.after.hash == sealed.rows.events[-1]["hash"]


async def test_a_sealed_batch_decides_nothing_more(writer, wallet_and_shop):
    wallet, shop, first = wallet_and_shop
    decided = await decided_after(writer, first.sealed, transfer(wallet, shop, "1.00"))
    seal(decided)

    with pytest.raises(AssertionError, match="sealed"):
        await writer.decide(decided, one_request(transfer(wallet, shop, "1.00")))


async def test_a_ledger_carried_past_its_limit_keeps_only_what_the_batch_before_changed(writer, wallet_and_shop):
    wallet, shop, _ = wallet_and_shop
    bystander = uuid.uuid4()
    opened = await writer.append(Pending(one_request(OpenAccount(bystander, "USD", 2, AccountFlags(), {}))))
    moved = await decided_after(writer, opened.sealed, transfer(shop, wallet, "1.00"))

    sealed = seal(moved)

    after = Decided.after(sealed, limit=0)

    assert set(after.ledger.accounts) == {wallet, shop}
    assert after.ledger.accounts[wallet].balance == moved.ledger.accounts[wallet].balance
    assert after.basis == sealed.after


async def test_a_ledger_carried_past_its_limit_of_transfers_keeps_every_account_it_holds(writer, wallet_and_shop):
    wallet, shop, _ = wallet_and_shop
    bystander = uuid.uuid4()
    opened = await writer.append(Pending(one_request(OpenAccount(bystander, "USD", 2, AccountFlags(), {}))))
    earlier = seal(await decided_after(writer, opened.sealed, *(transfer(shop, wallet, "1.00") for _ in range(3))))
    last = transfer(shop, wallet, "1.00")
    sealed = seal(await decided_after(writer, earlier, last))

    after = Decided.after(sealed, limit=3)  # 4 transfers held, 3 accounts

    assert set(after.ledger.transfers) == {last.id}
    assert set(after.ledger.accounts) == {bystander, wallet, shop}


async def test_a_pending_transfer_carried_past_the_limit_of_accounts_is_posted_with_its_accounts_read_again(
    writer, wallet_and_shop
):
    wallet, shop, _ = wallet_and_shop
    held = MakeTransfer(uuid.uuid4(), shop, wallet, Decimal("3.00"), "USD", None, {}, pending=True)
    recorded = await writer.append(Pending(one_request(held)))
    opened = [OpenAccount(uuid.uuid4(), "USD", 2, AccountFlags(), {}) for _ in range(2)]
    sealed = seal(await decided_after(writer, recorded.sealed, *opened))

    after = Decided.after(sealed, limit=3)  # 4 accounts held: cut down to the two just opened
    await writer.decide(after, one_request(PostTransfer(held.id)))

    [[posted]] = after.results
    assert isinstance(posted, Recorded)
    assert after.ledger.accounts[wallet].balance.credits_posted == Decimal("13.00")  # 10.00, then the 3.00 posted


# -- write --------------------------------------------------------------------


async def test_decisions_ahead_on_what_the_append_before_made_are_written_as_decided(writer, db, wallet_and_shop):
    # Holds made by the batch in flight are posted, voided and closed over
    # by the batch decided after it, before any of it is in the database.
    wallet, shop, first = wallet_and_shop
    spare = uuid.uuid4()
    held, voided = uuid.uuid4(), uuid.uuid4()
    in_flight = seal(
        await decided_after(
            writer,
            first.sealed,
            OpenAccount(spare, "USD", 2, AccountFlags(), {}),
            MakeTransfer(held, wallet, shop, Decimal("4.00"), "USD", None, {}, pending=True),
            MakeTransfer(voided, wallet, shop, Decimal("3.00"), "USD", None, {}, pending=True),
        )
    )
    after = await decided_after(
        writer,
        in_flight,
        PostTransfer(held, Decimal("2.50")),
        VoidTransfer(voided),
        CloseAccount(spare),
        transfer(wallet, shop, "7.50"),  # fits only once the holds are released
    )

    assert (await writer.append(in_flight)).sealed is in_flight
    sealed = seal(after)
    committed = await writer.append(sealed)

    assert committed.sealed is sealed and writer.decided_again == 0
    assert all(isinstance(o, Recorded) for o in committed.results[0])
    assert await debits_and_credits(db, wallet) == (Decimal("10.00"), Decimal("10.00"))
    assert await db.fetchval("SELECT closed FROM accounts WHERE id = $1", spare)
    await assert_log_matches_projections(db)
    await assert_no_flag_violated(db)


async def test_a_sealed_batch_is_written_as_sealed_whatever_is_decided_after_it(writer, db):
    # The batch decided next shares the ledger, and may move an account the
    # sealed one opened before the sealed one is written.
    shop, customer = uuid.uuid4(), uuid.uuid4()
    decided = await writer.at_head()
    await writer.decide(
        decided,
        one_request(
            OpenAccount(shop, "USD", 2, AccountFlags(), {}),
            OpenAccount(customer, "USD", 2, AccountFlags(), {}),
            transfer(shop, customer, "3.00"),
        ),
    )
    sealed = seal(decided)
    await decided_after(writer, sealed, transfer(shop, customer, "5.00"))  # never recorded

    await writer.append(sealed)

    assert await debits_and_credits(db, customer) == (Decimal("0.00"), Decimal("3.00"))
    await assert_log_matches_projections(db)


async def test_a_batch_decided_ahead_is_written_as_decided_while_the_head_stands(writer, db, wallet_and_shop):
    wallet, shop, first = wallet_and_shop
    sealed = seal(await decided_after(writer, first.sealed, transfer(wallet, shop, "8.00")))

    committed = await writer.append(sealed)

    assert committed.sealed is sealed
    assert writer.decided_again == 0
    [[outcome]] = committed.results
    assert isinstance(outcome, Recorded)
    assert committed.head == await read_head(db)
    assert await debits_and_credits(db, wallet) == (Decimal("8.00"), Decimal("10.00"))
    await assert_log_matches_projections(db)


async def test_writing_a_batch_on_a_head_since_moved_writes_nothing_and_says_so(writer, db, wallet_and_shop):
    wallet, shop, first = wallet_and_shop
    sealed = seal(await decided_after(writer, first.sealed, transfer(wallet, shop, "8.00")))
    await writer.submit(one_request(transfer(shop, wallet, "1.00")))
    head = await read_head(db)

    written = await write(db, sealed)

    assert isinstance(written, Stale) and written.sealed is sealed
    assert written.again().requests == sealed.requests
    assert await read_head(db) == head


async def test_an_append_by_another_process_meanwhile_has_it_decided_again(
    writer, db, database_url, clock, wallet_and_shop
):
    wallet, shop, first = wallet_and_shop
    decided = await decided_after(writer, first.sealed, transfer(wallet, shop, "8.00"))
    assert isinstance(decided.results[0][0], Recorded)  # 8.00 of the 10.00 would fit
    other = Writer(database_url, policy=RetryPolicy(), clock=clock)
    try:
        [[spent]] = await other.submit(one_request(transfer(wallet, shop, "5.00")))
    finally:
        other.close()
    assert isinstance(spent, Recorded)

    sealed = seal(decided)
    committed = await writer.append(sealed)

    assert committed.sealed is not sealed
    assert writer.decided_again == 1
    [[outcome]] = committed.results
    assert isinstance(outcome, Refused) and outcome.code == Code.EXCEEDS_CREDITS
    assert await debits_and_credits(db, wallet) == (Decimal("5.00"), Decimal("10.00"))
    await assert_log_matches_projections(db)
    await assert_no_flag_violated(db)


async def test_a_refusal_decided_on_a_head_since_moved_is_decided_again(
    writer, db, database_url, clock, wallet_and_shop
):
    wallet, shop, first = wallet_and_shop
    decided = await decided_after(writer, first.sealed, transfer(wallet, shop, "15.00"))
    assert isinstance(decided.results[0][0], Refused)  # the wallet holds 10.00
    other = Writer(database_url, policy=RetryPolicy(), clock=clock)
    try:
        await other.submit(one_request(transfer(shop, wallet, "5.00")))
    finally:
        other.close()

    # The batch records nothing, yet its refusal stood on the old head.
    committed = await writer.append(seal(decided))

    assert writer.decided_again == 1
    [[outcome]] = committed.results
    assert isinstance(outcome, Recorded)
    assert await debits_and_credits(db, wallet) == (Decimal("15.00"), Decimal("15.00"))
    await assert_log_matches_projections(db)


async def test_two_processes_writing_from_one_head_at_once_record_both(
    writer, db, database_url, clock, wallet_and_shop
):
    wallet, shop, _ = wallet_and_shop
    other = Writer(database_url, policy=RetryPolicy(), clock=clock)
    try:
        writers = (writer, other)
        batches = [await w.at_head() for w in writers]
        for w, decided in zip(writers, batches):
            await w.decide(decided, one_request(transfer(wallet, shop, "6.00")))
        assert batches[0].basis == batches[1].basis
        assert all(isinstance(b.results[0][0], Recorded) for b in batches)  # each alone would fit

        # Both written at once: one waits for the other's head, then finds it moved.
        committed = await asyncio.gather(*(w.append(seal(b)) for w, b in zip(writers, batches)))
        decided_again = writer.decided_again + other.decided_again
    finally:
        other.close()

    assert decided_again == 1
    outcomes = sorted(type(c.results[0][0]).__name__ for c in committed)
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
    touched = await writer.append(Pending(one_request(transfer(shop, wallet, "1.00"))))
    decided = await decided_after(writer, touched.sealed, transfer(wallet, shop, "500.00"))
    assert isinstance(decided.results[0][0], Recorded)  # against the wrong balance
    epoch = (await read_head(db)).epoch

    await rewrite(db)  # puts the log's 11.00 back
    sealed = seal(decided)
    committed = await writer.append(sealed)

    assert (await read_head(db)).epoch == epoch + 1
    assert committed.sealed is not sealed
    [[outcome]] = committed.results
    assert isinstance(outcome, Refused) and outcome.code == Code.EXCEEDS_CREDITS
    await assert_log_matches_projections(db)
    await assert_no_flag_violated(db)


async def test_a_batch_decided_after_one_never_recorded_is_decided_again(writer, db, wallet_and_shop):
    wallet, shop, first = wallet_and_shop
    lost = seal(await decided_after(writer, first.sealed, transfer(wallet, shop, "8.00")))  # its append fails
    decided = await decided_after(writer, lost, transfer(wallet, shop, "5.00"))
    assert isinstance(decided.results[0][0], Refused)  # after the 8.00 that never happened

    sealed = seal(decided)
    committed = await writer.append(sealed)

    assert committed.sealed is not sealed
    [[outcome]] = committed.results
    assert isinstance(outcome, Recorded)
    assert await debits_and_credits(db, wallet) == (Decimal("5.00"), Decimal("10.00"))
    await assert_log_matches_projections(db)


@pytest.mark.parametrize("copy_from", [COPY_FROM, 1], ids=["statement", "copy"])
async def test_a_transfer_recorded_already_is_taken_for_new_outside_the_lock_and_the_write_finds_it_stale(
    writer, db, wallet_and_shop, copy_from
):
    wallet, shop, _ = wallet_and_shop
    paid = transfer(wallet, shop, "4.00")
    await writer.submit(one_request(paid))
    tables = ("events", "transfers", "entries", "balances", "merkle_subtrees")
    before = (await stored_rows(db, *tables), await read_head(db))
    decided = await decided_at_head(writer, transfer(shop, wallet, "1.00"), paid)  # a ledger without it
    assert isinstance(decided.results[0][1], Recorded)  # taken for new: its id was not looked up

    written = await write(db, seal(decided, copy_from=copy_from))

    assert isinstance(written, Stale)
    assert (await stored_rows(db, *tables), await read_head(db)) == before


async def test_a_repeated_transfer_taken_for_new_is_decided_again_and_found_to_exist(writer, db, wallet_and_shop):
    wallet, shop, _ = wallet_and_shop
    paid = transfer(wallet, shop, "4.00")
    await writer.submit(one_request(paid))
    decided = await decided_at_head(writer, paid)

    committed = await writer.append(seal(decided))

    [[outcome]] = committed.results
    assert isinstance(outcome, Existing) and outcome.subject.id == paid.id
    assert writer.decided_again == 1
    assert await debits_and_credits(db, wallet) == (Decimal("4.00"), Decimal("10.00"))
    await assert_log_matches_projections(db)


async def test_a_refusal_of_a_repeated_transfer_taken_for_new_is_decided_again(writer, db, wallet_and_shop):
    # Repeated once the wallet can no longer pay it, a transfer taken for new
    # would be refused; it was recorded, so the answer is that it exists.
    wallet, shop, _ = wallet_and_shop
    paid = transfer(wallet, shop, "10.00")
    await writer.submit(one_request(paid))
    decided = await decided_at_head(writer, paid)
    assert isinstance(decided.results[0][0], Refused) and decided.refused_unseen == [paid.id]
    sealed = seal(decided)
    assert isinstance(sealed.rows, Unchanged)

    committed = await writer.append(sealed)

    [[outcome]] = committed.results
    assert isinstance(outcome, Existing) and outcome.subject.id == paid.id
    assert writer.decided_again == 1


# -- the coalescer: batches decided and sealed while the append before is in flight


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


@pytest.fixture
async def started_coalescer(database_url, clock):
    """Make a coalescer with the limits given, in front of a writer of its
    own, started (both are returned); closed at the end."""
    made: list[tuple[Coalescer, Writer]] = []

    def make(*, copy_from: int = COPY_FROM, **limits) -> tuple[Coalescer, Writer]:
        writer = Writer(database_url, policy=RetryPolicy(), clock=clock, copy_from=copy_from)
        coalescer = Coalescer(writer, max_queued=10_000, **limits)
        coalescer.start()
        made.append((coalescer, writer))
        return coalescer, writer

    yield make
    for coalescer, writer in made:
        await coalescer.close()
        writer.close()


async def submitted_behind_a_held_up_append(coalescer: Coalescer, db, commands: list[Command]) -> list[Outcome]:
    """Submit the first command, hold up its append, and submit the rest one
    request each behind it; the outcome of each once all are answered."""
    async with appends_held_up(db):
        first = asyncio.ensure_future(coalescer.submit(one_request(commands[0])))
        await wait_for_blocked_backend(db)
        rest = [asyncio.ensure_future(coalescer.submit(one_request(c))) for c in commands[1:]]
        while coalescer.queued < len(rest):
            await asyncio.sleep(0.01)
    return [outcome for [[outcome]] in await asyncio.gather(first, *rest)]


async def test_a_ledger_carried_past_the_limit_keeps_what_the_append_in_flight_changed(started_coalescer, writer, db):
    # Cut down before every batch: each is decided on what the append in
    # flight left the wallet (not yet in the database) and the rest read afresh.
    coalescer, _ = started_coalescer(chain_limit=0)
    wallet, shop, opening = opening_wallet_and_shop("5.00")
    await writer.submit(opening)

    outcomes = await submitted_behind_a_held_up_append(
        coalescer, db, [transfer(wallet, shop, "1.00") for _ in range(11)]
    )

    assert [type(o).__name__ for o in outcomes] == ["Recorded"] * 5 + ["Refused"] * 6
    assert coalescer.decided_ahead > 0
    await assert_no_flag_violated(db)
    await assert_log_matches_projections(db)


async def test_the_batch_behind_one_found_stale_is_decided_under_the_lock_rather_than_written_stale(
    started_coalescer, writer, db
):
    coalescer, coalescer_writer = started_coalescer()
    a, b = uuid.uuid4(), uuid.uuid4()
    paid = transfer(a, b, "1.00")
    # Recorded by another writer: the coalescer's ledger does not hold it.
    await writer.submit(one_request(*(OpenAccount(i, "USD", 2, AccountFlags(), {}) for i in (a, b)), paid))

    outcomes = await submitted_behind_a_held_up_append(coalescer, db, [paid, transfer(a, b, "2.00")])

    assert [type(o).__name__ for o in outcomes] == ["Existing", "Recorded"]
    assert coalescer.decided_ahead == 1
    assert coalescer_writer.decided_again == 1  # the repeat's batch; the one behind it went straight to the lock
    await assert_log_matches_projections(db)


async def test_a_full_batch_decided_ahead_is_sealed_with_its_copy_text_while_the_one_before_is_recorded(
    started_coalescer, writer, db, monkeypatch
):
    monkeypatch.setattr(copying, "CHUNK", 2)  # text made a chunk at a time
    coalescer, copying_writer = started_coalescer(max_commands=4, copy_from=1)
    a, b = uuid.uuid4(), uuid.uuid4()
    await writer.submit(one_request(*(OpenAccount(i, "USD", 2, AccountFlags(), {}) for i in (a, b))))

    outcomes = await submitted_behind_a_held_up_append(coalescer, db, [transfer(a, b, "1.00") for _ in range(9)])

    assert all(isinstance(o, Recorded) for o in outcomes)
    assert coalescer.sealed_ahead >= 1
    assert copying_writer.decided_again == 0
    await assert_log_matches_projections(db)


# -- the coalescer after its queue ran dry: the ledger kept while the head stands


async def last_statement_read(db) -> str:
    """The statement the writer's reading connection ran last."""
    return await db.fetchval(
        "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
        READER_NAME,
    )


async def test_a_write_after_the_queue_ran_dry_reads_only_the_head_while_nothing_was_recorded_since(
    started_coalescer, db
):
    coalescer, coalescer_writer = started_coalescer()
    wallet, shop, opening = opening_wallet_and_shop()
    await coalescer.submit(opening)

    [[paid]] = await coalescer.submit(one_request(transfer(wallet, shop, "4.00")))

    assert isinstance(paid, Recorded)
    assert await last_statement_read(db) == "SELECT seq, hash, epoch FROM ledger_head"  # no account read again
    assert coalescer_writer.decided_again == 0
    assert await debits_and_credits(db, wallet) == (Decimal("4.00"), Decimal("10.00"))
    await assert_log_matches_projections(db)


async def test_a_write_after_another_process_appended_meanwhile_is_decided_on_the_log_as_it_stands(
    started_coalescer, writer, db
):
    coalescer, coalescer_writer = started_coalescer()
    wallet, shop, opening = opening_wallet_and_shop()
    await coalescer.submit(opening)
    [[spent]] = await writer.submit(one_request(transfer(wallet, shop, "8.00")))  # another process's append
    assert isinstance(spent, Recorded)

    [[refused]] = await coalescer.submit(one_request(transfer(wallet, shop, "4.00")))

    # Decided on the wallet as the other append left it, not as the coalescer last saw it.
    assert isinstance(refused, Refused) and refused.code == Code.EXCEEDS_CREDITS
    assert coalescer_writer.decided_again == 0
    assert await debits_and_credits(db, wallet) == (Decimal("8.00"), Decimal("10.00"))
    await assert_no_flag_violated(db)
    await assert_log_matches_projections(db)


@pytest.mark.parametrize("rewrite", [repair, rebuild], ids=["repair", "rebuild"])
async def test_a_write_after_projections_were_rewritten_meanwhile_reads_them_again(rewrite, started_coalescer, db):
    coalescer, coalescer_writer = started_coalescer()
    wallet, shop, opening = opening_wallet_and_shop()
    await coalescer.submit(opening)
    await db.execute("UPDATE balances SET credits_posted = 1000 WHERE account_id = $1", wallet)
    await rewrite(db)  # puts the log's 10.00 back, and moves the epoch

    [[paid]] = await coalescer.submit(one_request(transfer(wallet, shop, "4.00")))

    assert isinstance(paid, Recorded)
    assert "FROM accounts" in await last_statement_read(db)
    assert coalescer_writer.decided_again == 0
    await assert_log_matches_projections(db)
