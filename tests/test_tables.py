"""Each table's columns are written once (ledger.store.tables): those lists
match the migrated schema, the structs whose rows they are, and the rows and
COPY lines the write path makes."""

import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest

from ledger.domain.commands import MakeTransfer, OpenAccount, ReverseTransfer
from ledger.domain.ledger import Entry
from ledger.domain.merkle import Frontier
from ledger.domain.model import AccountFlags, Balance, Transfer
from ledger.store.copying import entry_line, event_line, transfer_line
from ledger.store.head import LogHead
from ledger.store.rows import account_row
from ledger.store.tables import ACCOUNTS, BALANCE_TOTALS, BALANCES, ENTRIES, EVENTS, SUBTREES, TRANSFERS, Table
from ledger.store.write_path import AppendRequest, Decided, seal

TABLES = [EVENTS, ACCOUNTS, BALANCES, TRANSFERS, ENTRIES, SUBTREES]
MOMENT = datetime(2026, 12, 3, 9, 30, 15, 250000, tzinfo=UTC)


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
async def test_each_table_lists_the_migrated_columns_in_order_with_their_types(db, table: Table):
    migrated = await db.fetch(
        "SELECT attname, atttypid::regtype::text AS type FROM pg_attribute"
        " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        table.name,
    )
    listed = [(name, await db.fetchval("SELECT $1::regtype::text", type_)) for name, type_ in table.types.items()]

    assert listed == [(row["attname"], row["type"]) for row in migrated]


def test_a_transfer_struct_has_the_transfers_columns_as_its_fields():
    assert Transfer.__struct_fields__ == TRANSFERS.columns


def test_an_entry_struct_has_the_entries_columns_with_its_balance_nested():
    nested = [c for c in ENTRIES.columns if c not in BALANCE_TOTALS]
    assert [f for f in Entry.__struct_fields__ if f != "balance"] == nested
    assert Balance.__struct_fields__ == BALANCE_TOTALS == BALANCES.columns[1:-1]


def decided_batch() -> Decided:
    """Two accounts opened, a pending transfer and a posted one between them,
    and a reversal of part of the posted one, decided."""
    a, b = uuid.uuid4(), uuid.uuid4()
    decided = Decided.at(LogHead(0, b"\0" * 32, 0), Frontier())
    commands = [
        OpenAccount(a, "USD", 2, AccountFlags(debits_must_not_exceed_credits=False), {"k": "v"}),
        OpenAccount(b, "USD", 2, AccountFlags(), {}),
        MakeTransfer(uuid.uuid4(), a, b, Decimal("12.34"), "USD", "c\t1", {"n": 1}, pending=True, timeout_seconds=60),
        MakeTransfer(paid := uuid.uuid4(), a, b, Decimal("5.00"), "USD", None, {}),
        ReverseTransfer(uuid.uuid4(), paid, Decimal("1.25")),
    ]
    decided.decide([AppendRequest(commands, metadata={"request_id": "r"})], now=MOMENT)
    return decided


def test_the_rows_the_write_path_makes_are_keyed_by_their_tables_columns():
    decided = decided_batch()
    rows = seal(decided).rows.projection

    assert all(tuple(row) == EVENTS.columns for row in decided.events)
    assert all(tuple(row) == ACCOUNTS.columns for row in rows.accounts)
    account = next(iter(decided.ledger.accounts.values()))
    assert tuple(account_row(account, seq=1)) == ACCOUNTS.columns


async def copied_back(db, table: Table, line: str) -> dict:
    """``line`` COPYed into a table shaped as ``table``, read back."""
    await db.execute(f"CREATE TEMP TABLE copied (LIKE {table.name})")
    try:
        await db.copy_to_table("copied", source=io.BytesIO(line.encode()), columns=table.columns)
        return dict(await db.fetchrow(f"SELECT {table.column_list()} FROM copied"))
    finally:
        await db.execute("DROP TABLE copied")


async def test_a_transfer_line_writes_the_transfers_columns_in_order(db):
    transfers = decided_batch().ledger.transfers.values()
    assert {t.reverses is None for t in transfers} == {True, False}

    for transfer in transfers:
        copied = await copied_back(db, TRANSFERS, transfer_line(transfer))
        assert copied == {c: getattr(transfer, c) for c in TRANSFERS.columns}


async def test_an_entry_line_writes_the_entries_columns_in_order(db):
    entry = seal(decided_batch()).rows.projection.entries[0]

    copied = await copied_back(db, ENTRIES, entry_line(entry))

    fields = {f: getattr(entry, f) for f in entry.__struct_fields__ if f != "balance"}
    assert copied == {**fields, **{t: getattr(entry.balance, t) for t in BALANCE_TOTALS}}


async def test_an_event_line_writes_the_events_columns_in_order(db):
    row = decided_batch().events[-1]

    copied = await copied_back(db, EVENTS, event_line(row))

    assert copied == {
        **row,
        "data": msgspec.json.decode(row["data"]),
        "metadata": msgspec.json.decode(row["metadata"]),
    }
