"""The event log in the database: append-only, gapless, hash-chained; and
projections that name only accounts that exist."""

import asyncio
import uuid

import asyncpg
import pytest

from alembic import command
from ledger.store import migrations
from ledger.store.replay import ChainBroken, fold_log
from tests.conftest import assert_tree_matches_log, transfer_body


@pytest.fixture
async def some_events(client, open_account):
    a, b = await open_account(), await open_account()
    await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))


@pytest.mark.parametrize(
    "statement",
    ["UPDATE events SET type = 'x' WHERE seq = 1", "DELETE FROM events WHERE seq = 3", "TRUNCATE events"],
)
async def test_events_cannot_be_changed_or_removed(db, some_events, statement):
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(statement)
    assert await db.fetchval("SELECT count(*) FROM events") == 3


@pytest.fixture
async def a_tree_of_stored_subtrees(client, open_account, db):
    """A log of 40 events: subtrees of 16 leaves and more are stored."""
    a, b = await open_account(), await open_account()
    items = [transfer_body(a, b, "1.00") for _ in range(38)]
    assert (await client.post("/v1/transfer-batches", json={"transfers": items})).status == 200
    assert await db.fetchval("SELECT count(*) FROM merkle_subtrees") == 3  # (4, 0), (4, 1), (5, 0)


@pytest.mark.parametrize(
    "statement",
    ["UPDATE merkle_subtrees SET hash = '' WHERE level = 4", "DELETE FROM merkle_subtrees", "TRUNCATE merkle_subtrees"],
)
async def test_the_merkle_tree_cannot_be_changed_or_removed(db, a_tree_of_stored_subtrees, statement):
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(statement)
    await assert_tree_matches_log(db)


async def test_a_ledger_migrated_from_before_the_merkle_tree_gets_its_tree(database_url, db, a_tree_of_stored_subtrees):
    config = migrations.alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0008")
    assert await db.fetchval("SELECT to_regclass('merkle_subtrees')") is None

    await asyncio.to_thread(command.upgrade, config, "head")

    await assert_tree_matches_log(db)


async def test_each_event_hash_links_to_its_predecessor(db, some_events):
    ledger = await fold_log(db)
    assert ledger.last_seq == 3
    assert await db.fetchval("SELECT hash FROM events WHERE seq = 3") == await db.fetchval(
        "SELECT hash FROM ledger_head"
    )


async def test_an_event_edited_behind_the_services_back_breaks_the_chain(db, some_events):
    await db.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    await db.execute("""UPDATE events SET data = jsonb_set(data, '{amount}', '"100.00"') WHERE seq = 3""")
    with pytest.raises(ChainBroken) as broken:
        await fold_log(db)
    assert broken.value.seq == 3


NOBODY = uuid.UUID(int=1)


_NEW_TRANSFERS = (
    "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, metadata, pending, status,"
    " seq, created_at) SELECT gen_random_uuid(), {debit}, {credit}, 1, 'USD', '{{}}', false, 'posted',"
    " 1000 + row_number() OVER (), now()"
    " FROM accounts"
)


@pytest.mark.parametrize(
    ("statement", "named"),
    [
        ("INSERT INTO balances (account_id, seq) VALUES ($1, 1)", "balances.account_id"),
        (_NEW_TRANSFERS.format(debit="id", credit="$1"), "transfers.credit_account_id"),
        (_NEW_TRANSFERS.format(debit="$1", credit="id"), "transfers.debit_account_id"),
        (
            "INSERT INTO entries (account_id, seq, transfer_id, type, side, amount, recorded_at)"
            " VALUES ($1, 100, gen_random_uuid(), 'transfer_posted', 'debit', 1, now())",
            "entries.account_id",
        ),
    ],
    ids=["balance", "transfer-credit", "transfer-debit", "entry"],
)
async def test_a_row_naming_an_account_that_does_not_exist_is_refused(db, some_events, statement, named):
    rows = "SELECT (SELECT count(*) FROM balances), (SELECT count(*) FROM transfers), (SELECT count(*) FROM entries)"
    before = await db.fetchrow(rows)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match=f"{named} names account {NOBODY}"):
        await db.execute(statement, NOBODY)
    assert await db.fetchrow(rows) == before


async def test_a_row_naming_a_missing_account_is_refused_after_statements_that_passed(db, some_events):
    # The check's plan is kept from statement to statement on a connection.
    entry = (
        "INSERT INTO entries (account_id, seq, transfer_id, type, side, amount, recorded_at)"
        " VALUES ($1, $2, gen_random_uuid(), 'transfer_posted', 'debit', 1, now())"
    )
    account = await db.fetchval("SELECT id FROM accounts LIMIT 1")
    for seq in (100, 101, 102):
        await db.execute(entry, account, seq)
    for _ in range(2):
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=f"entries.account_id names account {NOBODY}"):
            await db.execute(entry, NOBODY, 103)


_NEW_ACCOUNTS = (
    "INSERT INTO accounts (id, currency, scale, debits_must_not_exceed_credits, credits_must_not_exceed_debits,"
    " metadata, closed, seq, created_at) SELECT id, 'USD', 2, false, false, '{}', false, 100000 + n, now()"
    " FROM unnest($1::uuid[]) WITH ORDINALITY AS a(id, n)"
)
_TRANSFERS_BETWEEN = (
    "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, metadata, pending, status,"
    " seq, created_at) SELECT gen_random_uuid(), d, c, 1, 'USD', '{}', false, 'posted',"
    " (SELECT coalesce(max(seq), 0) FROM transfers) + n, now()"
    " FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS t(d, c, n)"
)


async def account_scans_of(db, statements: int, debits: list[uuid.UUID], credits: list[uuid.UUID]) -> dict[str, int]:
    """The scans of ``accounts`` (sequential, by index) that ``statements``
    inserts of transfers from ``debits`` to ``credits`` make, their checks'
    included (their queries run in the same backend and transaction)."""
    scans = "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'accounts'"
    async with db.transaction():
        before = await db.fetchrow(scans)
        for _ in range(statements):
            await db.execute(_TRANSFERS_BETWEEN, debits, credits)
        after = await db.fetchrow(scans)
    return {kind: after[kind] - before[kind] for kind in ("seq_scan", "idx_scan")}


async def test_a_rows_accounts_are_checked_by_key_whatever_the_number_of_accounts(db):
    # The check's cost follows the rows a statement writes, never the number
    # of accounts: it looks each named account up, and reads no other. (A
    # plan that hashed the whole table, kept for the connection, was once
    # chosen for a few dozen rows among ten thousand accounts.)
    accounts = [uuid.uuid4() for _ in range(20_000)]
    await db.execute(_NEW_ACCOUNTS, accounts)

    scans = await account_scans_of(db, 8, accounts[:64], accounts[-64:])

    assert scans == {"seq_scan": 0, "idx_scan": 8 * 128}


async def test_the_check_planned_among_few_accounts_still_looks_each_up_among_many(db):
    # A plan made while the table is small (and its statistics say so) is
    # kept for the connection while the table grows: it must not be one
    # that reads the table for each account named.
    few = [uuid.uuid4() for _ in range(4)]
    await db.execute(_NEW_ACCOUNTS, few)
    await db.execute("VACUUM ANALYZE accounts")
    await account_scans_of(db, 1, few[:2], few[2:])  # the plan is made here
    many = [uuid.uuid4() for _ in range(20_000)]
    await db.execute(_NEW_ACCOUNTS, many)

    scans = await account_scans_of(db, 1, many[:64], many[-64:])

    # One index search per account named, or two: among few accounts the
    # planner may take the (currency, id) index, searched once per currency.
    assert scans["seq_scan"] == 0
    assert 128 <= scans["idx_scan"] <= 2 * 128


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM accounts",
        "UPDATE accounts SET id = gen_random_uuid()",
        "UPDATE entries SET account_id = (SELECT max(id::text)::uuid FROM accounts)",
        "UPDATE transfers SET credit_account_id = debit_account_id, debit_account_id = credit_account_id",
        "TRUNCATE accounts",
    ],
)
async def test_what_a_row_names_cannot_be_taken_away(db, some_events, statement):
    before = await db.fetch("SELECT * FROM entries ORDER BY account_id, seq")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute(statement)
    assert await db.fetchval("SELECT count(*) FROM accounts") == 2
    assert await db.fetch("SELECT * FROM entries ORDER BY account_id, seq") == before


async def test_the_events_are_indexed_by_seq_alone(db):
    # Every index on the log is written by every append; nothing reads the
    # events but by seq (see migration 0012).
    indexes = await db.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'events'")
    assert [i["indexname"] for i in indexes] == ["events_pkey"]


async def test_balances_keep_room_on_each_page_for_their_updates(db):
    # Half-empty pages let an updated balance stay on its page (see migration 0005).
    options = await db.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'balances'::regclass")
    assert options == ["fillfactor=50"]


async def test_every_migration_can_be_undone_and_done_again(database_url, db):
    config = migrations.alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "base")
    assert await db.fetchval("SELECT to_regclass('events')") is None

    await asyncio.to_thread(command.upgrade, config, "head")

    assert await db.fetchval("SELECT version_num FROM alembic_version") == migrations.head_revision()
    with pytest.raises(asyncpg.ForeignKeyViolationError, match=f"entries.account_id names account {NOBODY}"):
        await db.execute(
            "INSERT INTO entries (account_id, seq, transfer_id, type, side, amount, recorded_at)"
            " VALUES ($1, 1, gen_random_uuid(), 'transfer_posted', 'debit', 1, now())",
            NOBODY,
        )
