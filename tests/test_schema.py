"""The event log in the database: append-only, gapless, hash-chained."""

import asyncpg
import pytest

from ledger.store.replay import ChainBroken, fold_log
from tests.conftest import transfer_body


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


async def test_each_event_hash_links_to_its_predecessor(db, some_events):
    ledger = await fold_log(db)
    assert ledger.head == 3
    assert await db.fetchval("SELECT hash FROM events WHERE seq = 3") == await db.fetchval(
        "SELECT hash FROM ledger_head"
    )


async def test_an_event_edited_behind_the_services_back_breaks_the_chain(db, some_events):
    await db.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    await db.execute("""UPDATE events SET data = jsonb_set(data, '{amount}', '"100.00"') WHERE seq = 3""")
    with pytest.raises(ChainBroken) as broken:
        await fold_log(db)
    assert broken.value.seq == 3
