"""Large batches are recorded by COPY: the same rows as the one-statement
write, only from the head they were decided after, and all or nothing."""

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ledger.domain.commands import (
    CloseAccount,
    MakeTransfer,
    OpenAccount,
    PostTransfer,
    ReverseTransfer,
    VoidTransfer,
)
from ledger.domain.model import AccountFlags
from ledger.store import copying as copying_module
from ledger.store.connection import connect
from ledger.store.retry import RetryPolicy
from ledger.store.write_path import COPY_FROM, AppendRequest, Copy, Stale, write
from ledger.store.writer import Writer
from tests.conftest import (
    TABLE_KEYS,
    appends_held_up,
    assert_log_matches_projections,
    kill_writer,
    ledger_snapshot,
    stored_rows,
    transfer_body,
    wait_for_blocked_backend,
)

MOMENT = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
#: Text that COPY's text format must escape, and JSON that holds escapes.
AWKWARD_CODE = "tab\there\nnew line\\back slash\rreturn"
AWKWARD_METADATA = {
    "note": 'back\\slash "quoted" ünïcødé\t\n',
    "list": [1, 2.5, None, True],
    "nested": {"\\": "\\N"},
}


@pytest.fixture
async def copying_writer(database_url: str, clock) -> AsyncIterator[Writer]:
    """A writer that records by COPY every batch that records anything."""
    writer = Writer(database_url, policy=RetryPolicy(), clock=clock, copy_from=1)
    yield writer
    writer.close()


def one_request(*commands) -> list[AppendRequest]:
    return [AppendRequest(list(commands), metadata={"request_id": "r-1", "token": "tést\\"})]


def awkward_appends() -> list[list[AppendRequest]]:
    """Two appends touching every projection: accounts opened (and moved at
    once), closed, transfers held and decided in the append that made them
    and in a later one, a transfer reversed in both, a refusal, and text that
    needs escaping."""
    ids = iter(uuid.UUID(int=random.Random(7).getrandbits(128) + n, version=4) for n in range(100))
    wallet, shop, bank, idle, late = (next(ids) for _ in range(5))
    held, held_and_posted, voided = next(ids), next(ids), next(ids)
    paid_in, reversed_early, reversed_late = next(ids), next(ids), next(ids)
    usd = dict(currency="USD", code=None, metadata={})
    first = one_request(
        OpenAccount(wallet, "USD", 2, AccountFlags(debits_must_not_exceed_credits=True), AWKWARD_METADATA),
        OpenAccount(shop, "USD", 2, AccountFlags(), {}),
        OpenAccount(bank, "USD", 2, AccountFlags(), {}),
        OpenAccount(idle, "USD", 2, AccountFlags(), {}),
        MakeTransfer(paid_in, bank, wallet, Decimal("100.00"), "USD", AWKWARD_CODE, AWKWARD_METADATA),
        ReverseTransfer(reversed_early, paid_in, Decimal("10.00"), None, AWKWARD_METADATA),
        MakeTransfer(held, wallet, shop, Decimal("30.00"), **usd, pending=True, timeout_seconds=60),
        MakeTransfer(held_and_posted, wallet, shop, Decimal("20.00"), **usd, pending=True),
        PostTransfer(held_and_posted, Decimal("15.00")),
        MakeTransfer(voided, bank, shop, Decimal("7.00"), **usd, pending=True),
        MakeTransfer(next(ids), wallet, shop, Decimal("1000.00"), **usd),  # refused: exceeds credits
    )
    second = one_request(
        PostTransfer(held, Decimal("25.00")),
        VoidTransfer(voided),
        CloseAccount(idle),
        OpenAccount(late, "USD", 2, AccountFlags(), {}),
        MakeTransfer(next(ids), bank, late, Decimal("5.00"), **usd),
        MakeTransfer(next(ids), late, wallet, Decimal("0.01"), **usd),
        ReverseTransfer(reversed_late, paid_in, Decimal("5.00")),  # made in the append before
    )
    return [first, second]


async def record_awkward_appends(dsn: str, *, copy_from: int, chunks_made_ahead: int = 0) -> dict[str, list[str]]:
    """Record :func:`awkward_appends` on ``dsn``, the first under the lock,
    the second decided outside it (with as many chunks of its COPY text made
    before its append as asked); every row written, and the head."""
    writer = Writer(dsn, policy=RetryPolicy(), clock=lambda: MOMENT, copy_from=copy_from)
    first, second = awkward_appends()
    try:
        await writer.submit(first)
        decided = await writer.at_head()
        await writer.decide(decided, second)
        sealed = writer.seal(decided)
        assert isinstance(sealed.rows, Copy) == (copy_from == 1)
        if isinstance(sealed.rows, Copy):
            for _ in itertools.islice(sealed.rows.making(), chunks_made_ahead):
                pass
        await writer.append(sealed)
    finally:
        writer.close()
    conn = await connect(dsn)
    try:
        # The chain, verified from the rows as read back.
        await assert_log_matches_projections(conn)
        rows = await stored_rows(conn, *TABLE_KEYS)
        rows["ledger_head"] = [str(tuple(await conn.fetchrow("SELECT seq, hash, epoch FROM ledger_head")))]
    finally:
        await conn.close()
    return rows


async def test_rows_recorded_by_copy_are_those_one_statement_records(database_url, another_database_url):
    by_statement = await record_awkward_appends(database_url, copy_from=10**9)
    by_copy = await record_awkward_appends(another_database_url, copy_from=1)

    assert by_copy == by_statement
    assert len(by_copy["events"]) == 17  # every command but the refusal
    conn = await connect(another_database_url)
    try:  # the awkward text is in it, as given
        assert await conn.fetchrow("SELECT code, metadata FROM transfers WHERE code IS NOT NULL") == (
            AWKWARD_CODE,
            AWKWARD_METADATA,
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("chunks_made_ahead", [1, 4, 100])
async def test_copy_text_made_ahead_in_part_or_whole_records_the_same_rows(
    database_url, another_database_url, monkeypatch, chunks_made_ahead
):
    monkeypatch.setattr(copying_module, "CHUNK", 2)  # the events, transfers and entries of an append: 8 chunks
    made_as_sent = await record_awkward_appends(database_url, copy_from=1)

    made_ahead = await record_awkward_appends(another_database_url, copy_from=1, chunks_made_ahead=chunks_made_ahead)

    assert made_ahead == made_as_sent


@pytest.fixture
async def opened(copying_writer: Writer) -> Callable[..., list[AppendRequest]]:
    """Two open accounts, and a maker of requests moving 1.00 between them."""
    debit, credit = uuid.uuid4(), uuid.uuid4()
    await copying_writer.submit(one_request(*(OpenAccount(i, "USD", 2, AccountFlags(), {}) for i in (debit, credit))))

    def transfers(count: int = 1) -> list[AppendRequest]:
        return one_request(
            *(MakeTransfer(uuid.uuid4(), debit, credit, Decimal("1.00"), "USD", None, {}) for _ in range(count))
        )

    return transfers


async def test_a_copied_batch_decided_on_a_head_since_moved_writes_nothing(copying_writer, opened, db):
    decided = await copying_writer.at_head()
    await copying_writer.decide(decided, opened())
    await copying_writer.submit(opened())  # moves the head
    before = await ledger_snapshot(db)

    assert isinstance(await write(db, copying_writer.seal(decided)), Stale)
    assert await ledger_snapshot(db) == before


async def test_a_copy_that_fails_midway_leaves_the_ledger_as_it_was(copying_writer, opened, db):
    decided = await copying_writer.at_head()
    await copying_writer.decide(decided, opened(3))
    sealed = copying_writer.seal(decided)
    assert isinstance(sealed.rows, Copy)
    # A row in the way of the batch's last entry: the COPY of entries fails,
    # after the head was moved and the events and transfers copied.
    last = sealed.rows.projection.entries[-1]
    await db.execute(
        "INSERT INTO entries (account_id, seq, transfer_id, type, side, amount, recorded_at) "
        "VALUES ($1, $2, $3, 'transfer_posted', 'debit', 1, now())",
        last.account_id,
        last.seq,
        uuid.uuid4(),
    )
    before = await ledger_snapshot(db)

    with pytest.raises(Exception, match="duplicate key"):
        await write(db, sealed)
    assert await ledger_snapshot(db) == before


async def test_a_batch_past_the_copy_threshold_is_recorded_whole_over_http(client, open_account, db):
    accounts = [await open_account() for _ in range(4)]
    rng = random.Random(5)
    items = [transfer_body(*rng.sample(accounts, 2), "0.01") for _ in range(COPY_FROM + 100)]

    response = await client.post("/v1/transfer-batches", json={"transfers": items})

    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == ["created"] * len(items)
    assert await db.fetchval("SELECT count(*) FROM transfers") == len(items)
    await assert_log_matches_projections(db)


async def test_a_copied_append_whose_connection_is_killed_in_its_transaction_is_retried(copying_writer, opened, db):
    requests = opened(3)
    decided = await copying_writer.at_head()
    await copying_writer.decide(decided, requests)
    async with appends_held_up(db):
        append = asyncio.ensure_future(copying_writer.append(copying_writer.seal(decided)))
        await wait_for_blocked_backend(db)  # its transaction began, and waits to move the head
        assert await kill_writer(db) == 1

    committed = await append
    assert [type(o).__name__ for o in committed.results[0]] == ["Recorded"] * 3
    assert copying_writer.retries == 1
    assert await db.fetchval("SELECT count(*) FROM transfers") == 3
    await assert_log_matches_projections(db)
