"""Reconciliation and rebuild: the stored projections are proved against the
log, differences are named and repaired, tampering with the log is found by
its hash chain, and every projection can be rebuilt from the log."""

import asyncio
import multiprocessing
import os
import random
import signal
import sys
import time
import uuid

import msgspec
import pytest

from ledger.store import chain_ranges
from ledger.store.chain_ranges import ChainWorkers
from ledger.store.rebuild import rebuild_projections
from ledger.store.reconcile import reconcile as reconcile_store
from ledger.store.replay import ChainBroken
from tests.conftest import (
    assert_log_matches_projections,
    ends_within,
    ledger_cli,
    ledger_snapshot,
    stored_rows,
    transfer_body,
)

ACCOUNTS = 12
TRANSFERS = 3000


@pytest.fixture
async def busy_ledger(client, open_account, fund):
    """Accounts in two currencies moved by thousands of transfers, some of
    them held and then posted in part, voided or left pending, some reversed
    in part and in whole, long after they were made; one account closed."""
    rng = random.Random(11)
    accounts = [await open_account(currency, 2) for currency in ("USD", "EUR") for _ in range(ACCOUNTS // 2)]
    for account in accounts:
        await fund(account, "1000000.00")
    items = []
    for _ in range(TRANSFERS):
        currency = rng.choice(["USD", "EUR"])
        debit, credit = rng.sample([a for a in accounts if a["currency"] == currency], 2)
        items.append(transfer_body(debit, credit, f"{rng.randint(1, 99999) / 100:.2f}", pending=rng.random() < 0.2))
    for start in range(0, len(items), 1000):
        response = await client.post("/v1/transfer-batches", json={"transfers": items[start : start + 1000]})
        assert response.status == 200
    decisions = [
        {"action": "post", "id": i["id"], "amount": "0.01"} if n % 3 == 0 else {"action": "void", "id": i["id"]}
        for n, i in enumerate(i for i in items if i["pending"])
        if n % 3 != 2  # every third hold stays pending
    ]
    response = await client.post("/v1/transfer-batches", json={"transfers": decisions})
    assert response.status == 200
    posted = [i for i in items if not i["pending"]][:300]
    reversals = [{"action": "reverse", "id": str(uuid.uuid4()), "reverses": i["id"], "amount": "0.01"} for i in posted]
    reversals += [{"action": "reverse", "id": str(uuid.uuid4()), "reverses": i["id"]} for i in posted[:100]]
    response = await client.post("/v1/transfer-batches", json={"transfers": reversals})
    assert [r["status"] for r in (await response.json())["results"]] == ["created"] * len(reversals)
    idle = await open_account("USD", 2)
    assert (await client.post(f"/v1/accounts/{idle['id']}/close")).status == 200
    return accounts


async def reconcile(client, repair=False):
    response = await client.post("/admin/v1/reconciliations", json={"repair": repair})
    assert response.status == 200
    return await response.json()


async def test_a_busy_ledger_reconciles_clean(client, busy_ledger, db):
    report = await reconcile(client)
    head = await db.fetchval("SELECT seq FROM ledger_head")
    assert report["ok"] is True
    assert report["head_seq"] == report["events_scanned"] == head > TRANSFERS
    # the busy accounts, their funding sources, and the closed one
    assert report["accounts_checked"] == 2 * ACCOUNTS + 1
    assert report["mismatches"] == []
    assert [t["currency"] for t in report["totals"]] == ["EUR", "USD"]
    assert all(t["balanced"] for t in report["totals"])
    assert report["chain"] == {"ok": True, "first_bad_seq": None}
    assert report["repaired"] == 0
    assert report["duration_ms"] >= 0


async def test_a_balance_changed_behind_the_service_is_found_named_and_repaired(client, busy_ledger, db):
    victim = busy_ledger[3]["id"]
    honest = await db.fetchrow("SELECT * FROM balances WHERE account_id = $1", victim)
    await db.execute("UPDATE balances SET credits_posted = credits_posted + 5 WHERE account_id = $1", victim)
    events_before = await db.fetch("SELECT seq, hash FROM events ORDER BY seq")

    report = await reconcile(client)
    assert report["ok"] is False
    assert report["mismatches"] == [
        {
            "account_id": victim,
            "field": "credits_posted",
            "stored": str(honest["credits_posted"] + 5),
            "replayed": str(honest["credits_posted"]),
        }
    ]
    assert report["repaired"] == 0

    repaired = await reconcile(client, repair=True)
    assert (repaired["mismatches"], repaired["repaired"]) == (report["mismatches"], 1)
    assert await db.fetchrow("SELECT * FROM balances WHERE account_id = $1", victim) == honest
    assert (await reconcile(client))["ok"] is True
    # The log is never written by a repair.
    assert await db.fetch("SELECT seq, hash FROM events ORDER BY seq") == events_before


async def test_an_account_row_missing_from_the_projection_is_named(client, open_account, db):
    account = await open_account()
    await db.execute("DELETE FROM balances WHERE account_id = $1", uuid.UUID(account["id"]))
    report = await reconcile(client)
    assert report["mismatches"] == [
        {"account_id": account["id"], "field": "account", "stored": None, "replayed": "present"}
    ]


async def tamper(db, sql, *args):
    """Change the log as its owner could, with the immutability trigger off."""
    await db.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    await db.execute(sql, *args)
    await db.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")


async def first_transfer_seq(db):
    return await db.fetchval("SELECT min(seq) FROM events WHERE type = 'transfer_posted' AND seq > 100")


async def test_an_edited_event_is_found_by_the_chain_and_never_repaired_from(client, busy_ledger, db):
    seq = await first_transfer_seq(db)
    await tamper(db, "UPDATE events SET data = jsonb_set(data, '{amount}', '\"0.01\"') WHERE seq = $1", seq)
    before = await ledger_snapshot(db)
    report = await reconcile(client, repair=True)
    assert report["ok"] is False
    assert report["chain"] == {"ok": False, "first_bad_seq": seq}
    # The edit shows in the replayed balances, but a tampered log repairs nothing.
    assert report["mismatches"]
    assert report["repaired"] == 0
    assert await ledger_snapshot(db) == before


async def test_a_deleted_event_is_found_at_its_seq(client, busy_ledger, db):
    seq = await first_transfer_seq(db)
    await tamper(db, "DELETE FROM events WHERE seq = $1", seq)
    report = await reconcile(client)
    assert report["chain"] == {"ok": False, "first_bad_seq": seq}
    # The accounts the deleted transfer moved differ from the replay.
    assert {m["field"] for m in report["mismatches"]} == {"debits_posted", "credits_posted"}


async def test_a_deleted_last_event_is_found_at_the_head(client, open_account, db):
    await open_account()
    head = await db.fetchval("SELECT seq FROM ledger_head")
    await tamper(db, "DELETE FROM events WHERE seq = $1", head)
    report = await reconcile(client)
    assert report["chain"] == {"ok": False, "first_bad_seq": head}


async def test_an_event_moving_an_account_no_earlier_event_opened_is_named(client, open_account, fund, db):
    account = await open_account()
    await fund(account, "10.00")
    opened = await db.fetchval("SELECT seq FROM events WHERE stream_id = $1", uuid.UUID(account["id"]))
    moved = await db.fetchval("SELECT max(seq) FROM events WHERE type = 'transfer_posted'")
    await tamper(db, "DELETE FROM events WHERE seq = $1", opened)

    report = await reconcile(client)

    assert report["replay_error"] == (
        f"event {moved} cannot be applied: it moves account {account['id']}, which no earlier event opened"
    )
    assert report["ok"] is False


async def test_a_release_of_a_transfer_no_earlier_event_held_is_named(client, open_account, fund, db):
    debit, credit = await open_account(), await open_account()
    await fund(debit, "10.00")
    held = transfer_body(debit, credit, "4.00", pending=True)
    assert (await client.post("/v1/transfers", json=held)).status == 201
    assert (await client.post(f"/v1/transfers/{held['id']}/void")).status == 200
    voided = await db.fetchval("SELECT seq FROM events WHERE type = 'pending_transfer_voided'")
    await tamper(db, "DELETE FROM events WHERE type = 'transfer_pending'")

    report = await reconcile(client)

    assert (
        report["replay_error"] == f"event {voided} cannot be applied: it releases a transfer that no earlier event held"
    )


async def test_an_event_whose_data_cannot_be_read_is_named_and_repairs_nothing(client, busy_ledger, db):
    seq = await first_transfer_seq(db)
    await tamper(db, "UPDATE events SET data = jsonb_set(data, '{amount}', '\"lots\"') WHERE seq = $1", seq)
    await db.execute("UPDATE balances SET debits_posted = debits_posted + 1")
    before = await ledger_snapshot(db)

    report = await reconcile(client, repair=True)

    assert report["replay_error"].startswith(f"event {seq} cannot be applied: its data is not a transfer_posted event")
    assert report["chain"] == {"ok": False, "first_bad_seq": seq}
    assert (report["ok"], report["repaired"]) == (False, 0)
    assert await ledger_snapshot(db) == before


async def test_an_event_lacking_a_field_of_its_type_is_named(client, busy_ledger, db):
    seq = await first_transfer_seq(db)
    await tamper(db, "UPDATE events SET data = data - 'debit_account_id' WHERE seq = $1", seq)

    report = await reconcile(client)

    assert report["replay_error"] == (
        f"event {seq} cannot be applied: its data is not a transfer_posted event:"
        " Object missing required field `debit_account_id`"
    )
    assert report["ok"] is False


async def projections(db):
    return await stored_rows(db, "accounts", "balances", "transfers", "entries")


async def test_rebuild_reproduces_every_projection_byte_for_byte(client, busy_ledger, db):
    before = await projections(db)
    await db.execute("UPDATE balances SET debits_posted = 0")
    await db.execute("DELETE FROM entries WHERE seq % 2 = 0")
    rebuilt = await rebuild_projections(db, chunk=700)
    assert rebuilt.events == await db.fetchval("SELECT seq FROM ledger_head")
    assert await projections(db) == before
    await assert_log_matches_projections(db)


async def test_rebuild_in_chunks_keeps_the_balance_an_early_chunk_left(client, open_account, fund, db):
    early, late = await open_account(), await open_account()
    await fund(early, "5.00")
    for _ in range(4):
        await fund(late, "1.00")
    before = await projections(db)
    await db.execute("UPDATE balances SET credits_posted = 0")

    await rebuild_projections(db, chunk=2)

    assert await projections(db) == before


@pytest.mark.parametrize("chunk", [5000, 7], ids=["in the first chunk", "after chunks were written"])
async def test_rebuild_from_a_broken_chain_changes_nothing(client, busy_ledger, db, chunk):
    await tamper(db, "DELETE FROM events WHERE seq = $1", await first_transfer_seq(db))
    before = await projections(db)
    with pytest.raises(ChainBroken):
        await rebuild_projections(db, chunk=chunk)
    assert await projections(db) == before


async def test_ledger_reconcile_prints_the_report_and_exits_by_its_verdict(
    client, open_account, fund, database_url, db
):
    account = await open_account()
    await fund(account, "10.00")
    clean = ledger_cli(database_url, "reconcile")
    assert clean.returncode == 0, clean.stderr
    assert msgspec.json.decode(clean.stdout)["ok"] is True

    await db.execute("UPDATE balances SET credits_posted = 7 WHERE account_id = $1", uuid.UUID(account["id"]))
    dirty = ledger_cli(database_url, "reconcile")
    assert dirty.returncode == 1
    assert msgspec.json.decode(dirty.stdout)["mismatches"][0]["account_id"] == account["id"]

    repaired = ledger_cli(database_url, "reconcile", "--repair")
    assert msgspec.json.decode(repaired.stdout)["repaired"] == 1
    assert ledger_cli(database_url, "reconcile").returncode == 0


async def test_ledger_rebuild_projections_from_the_shell(client, open_account, fund, database_url, db):
    await fund(await open_account(), "10.00")
    before = await projections(db)
    await db.execute("DELETE FROM entries")
    result = ledger_cli(database_url, "rebuild-projections")
    assert result.returncode == 0, result.stderr
    assert b"projections rebuilt from 3 events" in result.stderr
    assert await projections(db) == before


def spread(database_url):
    """The chain checked in three processes, whatever the log's length."""
    return ChainWorkers(database_url, 3, spread_from=1)


async def test_a_chain_checked_in_ranges_reports_as_one_check_does(busy_ledger, db, database_url):
    alone = await reconcile_store(db)
    ranged = await reconcile_store(db, chain=spread(database_url))
    assert ranged.ok and alone.ok
    assert (ranged.chain, ranged.mismatches, ranged.totals) == (alone.chain, alone.mismatches, alone.totals)
    assert ranged.events_scanned == alone.events_scanned == ranged.head_seq


async def test_stop_signals_sent_to_the_checking_processes_as_they_start_are_not_theirs_to_act_on(
    busy_ledger, db, database_url
):
    # As Ctrl-C at a terminal, or systemd's stop, reaches the whole process
    # group: the caller acts on it; its checking processes carry on.
    alone = await reconcile_store(db)
    ranged = asyncio.create_task(reconcile_store(db, chain=spread(database_url)))
    signalled: set[int] = set()
    while not ranged.done():
        for child in multiprocessing.active_children():
            if child.pid is not None and child.pid not in signalled:
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    os.kill(child.pid, signum)
                signalled.add(child.pid)
        await asyncio.sleep(0.001)

    report = await ranged
    assert len(signalled) == 3
    assert report.ok
    assert (report.chain, report.totals) == (alone.chain, alone.totals)


#: A caller of checking processes that prints their pids and goes on checking
#: (ranges of one event: for long enough), until it is killed.
CALLER = """
import asyncio, multiprocessing, sys
from ledger.store import chain_ranges
from ledger.store.connection import connect

async def main(dsn):
    chain_ranges.RANGE_EVENTS = 1
    conn = await connect(dsn)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchval("SELECT seq FROM ledger_head")
        snapshot = await chain_ranges.export_snapshot(conn)
        checking = asyncio.ensure_future(chain_ranges.ChainWorkers(dsn, 2, spread_from=1).check(snapshot, head))
        while len(multiprocessing.active_children()) < 2:
            await asyncio.sleep(0.01)
        print(*(child.pid for child in multiprocessing.active_children()), flush=True)
        await checking

asyncio.run(main(sys.argv[1]))
"""


async def test_checking_processes_whose_caller_dies_end_themselves(busy_ledger, database_url, tmp_path):
    said = tmp_path / "pids"  # a file, not a pipe: the checking processes inherit it
    with said.open("w") as out:
        caller = await asyncio.create_subprocess_exec(sys.executable, "-c", CALLER, database_url, stdout=out)
    deadline = time.monotonic() + 30
    while not said.read_text().endswith("\n"):
        assert time.monotonic() < deadline and caller.returncode is None, "the caller never said its processes"
        await asyncio.sleep(0.01)
    children = [int(pid) for pid in said.read_text().split()]
    assert len(children) == 2
    caller.kill()  # as a stop it does not handle kills it
    await caller.wait()

    for child in children:  # each within a second of its own check, or so
        assert ends_within(10, child), f"checking process {child} outlived its caller"


@pytest.mark.parametrize("where", ["first", "before a range", "a range's first", "after a range's first", "last"])
@pytest.mark.parametrize("how", ["edited", "deleted"])
async def test_tampering_anywhere_is_found_at_its_seq_when_the_chain_is_checked_in_ranges(
    busy_ledger, db, database_url, where, how
):
    head = await db.fetchval("SELECT seq FROM ledger_head")
    second_range = 1 + head // 3  # where the second of three ranges begins
    seq = {
        "first": 1,
        "before a range": second_range - 1,
        "a range's first": second_range,
        "after a range's first": second_range + 1,
        "last": head,
    }[where]
    if how == "edited":
        await tamper(db, "UPDATE events SET metadata = '{\"x\": 1}' WHERE seq = $1", seq)
    else:
        await tamper(db, "DELETE FROM events WHERE seq = $1", seq)

    ranged = await reconcile_store(db, chain=spread(database_url))

    assert ranged.chain.first_bad_seq == seq == (await reconcile_store(db)).chain.first_bad_seq


async def test_reconciliation_tells_its_progress_up_to_the_head(busy_ledger, db):
    told = []
    report = await reconcile_store(db, progress=lambda events, head: told.append((events, head)))
    assert told[-1] == (report.head_seq, report.head_seq)
    assert [events for events, _ in told] == sorted(events for events, _ in told)


async def test_a_chain_checked_in_ranges_tells_its_progress_as_each_range_ends(
    busy_ledger, db, database_url, monkeypatch
):
    monkeypatch.setattr(chain_ranges, "RANGE_EVENTS", 1000)
    told = []
    report = await reconcile_store(
        db, chain=spread(database_url), progress=lambda events, head: told.append((events, head))
    )
    assert report.ok
    assert told[-1] == (report.head_seq, report.head_seq)
    # ranges of at most 1000, each told as it ends, then the end
    assert [events for events, _ in told] == sorted(events for events, _ in told)
    assert len(told) == -(-report.head_seq // 1000) + 1


@pytest.mark.parametrize("where", ["in the reconciling process", "in ranges"])
async def test_an_event_stored_past_the_head_is_found_and_repairs_nothing(busy_ledger, db, database_url, where):
    head = await db.fetchval("SELECT seq FROM ledger_head")
    last = await db.fetchrow("SELECT * FROM events WHERE seq = $1", head)
    data = msgspec.json.decode(msgspec.json.encode(last["data"]))
    if "amount" in data:
        data["amount"] = "1.00"
    await tamper(
        db,
        "INSERT INTO events (seq, type, stream_id, data, metadata, recorded_at, hash)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        head + 1,
        last["type"],
        uuid.uuid4(),
        data,
        last["metadata"],
        last["recorded_at"],
        last["hash"],
    )
    before = await ledger_snapshot(db)

    report = await reconcile_store(db, repair=True, chain=spread(database_url) if where == "in ranges" else None)

    assert report.chain.first_bad_seq == head + 1
    assert (report.mismatches, report.repaired) == ([], 0)
    assert await ledger_snapshot(db) == before
