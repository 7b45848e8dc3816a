"""ledger import: an export loaded into a ledger whose head it continues, in
one transaction, the chain and seq checked as it loads and the projections
rebuilt, so that the ledger answers every read as the source did; a file
that does not continue the log is refused naming the line, and nothing of
it is kept."""

import hashlib
import io
import json
import uuid

import pytest

from ledger.store.connection import connect
from ledger.store.export import export
from ledger.store.importer import ImportFailed, ImportRefused, import_log
from tests.conftest import TABLE_KEYS, canonical_bytes, ledger_cli, ledger_snapshot, stored_rows, transfer_body


@pytest.fixture
async def source(client, open_account, db):
    """A ledger with accounts, transfers posted, held and decided, a reversal
    and a closed account."""
    a, b, c = [await open_account(metadata={"n": n}) for n in range(3)]
    paid = transfer_body(a, b, "10.00", code="sale", metadata={"ünï": "☕"})
    await client.post("/v1/transfers", json=paid)
    held = await (await client.post("/v1/transfers", json=transfer_body(b, c, "4.00", pending=True))).json()
    await client.post(f"/v1/transfers/{held['id']}/post", json={"amount": "3.00"})
    await client.post(f"/v1/transfers/{paid['id']}/reverse", json={"id": str(uuid.uuid4()), "amount": "2.50"})
    voided = await (await client.post("/v1/transfers", json=transfer_body(a, c, "1.00", pending=True))).json()
    await client.post(f"/v1/transfers/{voided['id']}/void")
    empty = await open_account()
    await client.post(f"/v1/accounts/{empty['id']}/close")
    return db


async def exported(db, after_seq: int = 0) -> bytes:
    out = io.BytesIO()
    await export(db, out, after_seq=after_seq)
    return out.getvalue()


@pytest.fixture
async def target(another_database_url):
    conn = await connect(another_database_url)
    yield conn
    await conn.close()


async def everything(conn) -> dict:
    rows = await stored_rows(conn, *TABLE_KEYS)
    rows["head"] = [str(tuple(await conn.fetchrow("SELECT seq, hash FROM ledger_head")))]
    return rows


async def test_an_export_imported_into_an_empty_ledger_restores_every_row(source, target):
    rebuilt = await import_log(target, io.BytesIO(await exported(source)))

    assert await everything(target) == await everything(source)
    assert rebuilt.events == await source.fetchval("SELECT seq FROM ledger_head")


async def test_an_import_continues_a_ledger_that_holds_the_log_before_it(source, target):
    whole = await exported(source)
    await import_log(target, io.BytesIO(b"".join(whole.splitlines(keepends=True)[:4])))

    await import_log(target, io.BytesIO(await exported(source, after_seq=4)))

    assert await everything(target) == await everything(source)


def lines_of(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines()]


def replaced(lines: list[dict], index: int, **fields) -> list[dict]:
    """``lines`` with the fields of line ``index`` (from 0) replaced."""
    return [*lines[:index], {**lines[index], **fields}, *lines[index + 1 :]]


def without(line: dict, field: str) -> dict:
    return {k: v for k, v in line.items() if k != field}


def file_of(lines: list[dict]) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines))


@pytest.mark.parametrize(
    ("spoil", "line", "says"),
    [
        (lambda lines: lines[:3] + lines[4:], 4, "does not continue the log"),
        (lambda lines: lines[1:], 1, "does not continue the log"),
        (
            lambda lines: [*lines[:2], {**lines[2], "data": {**lines[2]["data"], "amount": "99.00"}}, *lines[3:]],
            3,
            "chain",
        ),
        (lambda lines: [*lines[:5], {**lines[5], "hash": "ab" * 32}, *lines[6:]], 6, "chain"),
        (lambda lines: [*lines[:1], {**lines[1], "type": "money_printed"}, *lines[2:]], 2, "not an event line"),
        (lambda lines: replaced(lines, 3, stream_id="not-a-uuid"), 4, "not an event line"),
        (lambda lines: replaced(lines, 2, recorded_at="2026-13-45T99:00:00Z"), 3, "not an event line"),
        (lambda lines: [without(line, "stream_id") for line in lines], 1, "not an event line"),
        (lambda lines: replaced(lines, 1, seq="two"), 2, "does not continue the log"),
        (lambda lines: [*lines[:6], without(lines[6], "seq"), *lines[7:]], 7, "seq missing does not continue"),
        (lambda lines: replaced(lines, 4, data=["a", "list"]), 5, "not an event line"),
        (lambda lines: replaced(lines, 3, hash="ab" * 31), 4, "not an event line"),
        (lambda lines: replaced(lines, 3, hash="xy" * 32), 4, "not an event line"),
        (lambda lines: replaced(lines, 3, hash="AB" * 32), 4, "not an event line"),
    ],
    ids=[
        "a seq skipped",
        "not after the head",
        "an edited event",
        "a forged hash",
        "an unknown type",
        "a stream_id that is no uuid",
        "a recorded_at that is no time",
        "no stream_id",
        "a seq that is no number",
        "no seq",
        "data that is no object",
        "a hash too short",
        "a hash that is no hex",
        "a hash in capitals",
    ],
)
async def test_a_file_that_does_not_continue_the_log_is_refused_naming_the_line(source, target, spoil, line, says):
    lines = spoil(lines_of(await exported(source)))
    before = await ledger_snapshot(target)

    with pytest.raises(ImportRefused, match=says) as refused:
        await import_log(target, file_of(lines))

    assert refused.value.line == line
    assert await ledger_snapshot(target) == before


def rechained(lines: list[dict]) -> list[dict]:
    """``lines`` with every hash made again from its line, as a forger would."""
    previous = bytes(32)
    for line in lines:
        line["hash"] = hashlib.sha256(previous + canonical_bytes(line)).hexdigest()
        previous = bytes.fromhex(line["hash"])
    return lines


def transfer_data(lines: list[dict], **fields) -> list[dict]:
    """``lines`` with the data of the first transfer's event (line 4) changed, and the chain made again."""
    assert lines[3]["type"] == "transfer_posted"
    return rechained(replaced(lines, 3, data={**lines[3]["data"], **fields}))


async def test_an_amount_written_as_a_json_number_is_refused_though_the_chain_holds(source, target):
    lines = transfer_data(lines_of(await exported(source)), amount=10)
    before = await ledger_snapshot(target)

    with pytest.raises(ImportRefused, match="not written as the ledger writes") as refused:
        await import_log(target, file_of(lines))

    assert refused.value.line == 4
    assert await ledger_snapshot(target) == before


async def test_a_transfer_from_an_account_no_event_opened_is_refused_naming_the_line(source, target):
    lines = transfer_data(lines_of(await exported(source)), debit_account_id=str(uuid.uuid4()))

    with pytest.raises(ImportRefused, match="which no event before it made") as refused:
        await import_log(target, file_of(lines))

    assert refused.value.line == 4


async def test_a_negative_amount_is_refused_by_the_ledgers_rules(source, target):
    lines = transfer_data(lines_of(await exported(source)), amount="-10.00")
    before = await ledger_snapshot(target)

    with pytest.raises(ImportFailed, match="breaks a rule of the ledger"):
        await import_log(target, file_of(lines))

    assert await ledger_snapshot(target) == before


async def test_a_line_that_is_json_but_no_object_is_refused(source, target):
    lines = (await exported(source)).splitlines()
    lines[1] = b'["seq", 2]'

    with pytest.raises(ImportRefused, match="not a JSON object") as refused:
        await import_log(target, io.BytesIO(b"\n".join(lines) + b"\n"))
    assert refused.value.line == 2


async def test_a_line_that_is_not_json_is_refused(source, target):
    data = await exported(source)
    spoiled = data.splitlines()
    spoiled[2] = b'{"seq": 3, oops'

    with pytest.raises(ImportRefused, match="not a JSON object") as refused:
        await import_log(target, io.BytesIO(b"\n".join(spoiled) + b"\n"))
    assert refused.value.line == 3


async def test_ledger_import_from_the_shell(source, target, another_database_url, database_url, tmp_path):
    path = tmp_path / "log.ndjson"
    assert ledger_cli(database_url, "export", "--output", str(path)).returncode == 0

    loaded = ledger_cli(another_database_url, "import", str(path))
    again = ledger_cli(another_database_url, "import", str(path))

    assert loaded.returncode == 0, loaded.stderr
    assert await everything(target) == await everything(source)
    assert again.returncode == 1
    assert b"line 1: seq 1 does not continue the log" in again.stderr


def test_ledger_import_of_a_file_that_is_not_utf8_names_the_line(another_database_url, tmp_path):
    path = tmp_path / "log.ndjson"
    path.write_bytes(b"\xff\xfe\n")

    refused = ledger_cli(another_database_url, "import", str(path))

    assert refused.returncode == 1
    assert b"line 1: not UTF-8 text" in refused.stderr
    assert b"Traceback" not in refused.stderr


async def test_a_line_with_a_byte_no_export_writes_is_refused_naming_it(source, target):
    lines = (await exported(source)).splitlines()
    lines[2] = lines[2][:10] + b"\x02" + lines[2][10:]  # raw control characters are not JSON text

    with pytest.raises(ImportRefused, match="not a line") as refused:
        await import_log(target, io.BytesIO(b"\n".join(lines) + b"\n"))
    assert refused.value.line == 3


def test_ledger_import_of_what_is_no_file_cannot_read_it(another_database_url, tmp_path):
    refused = ledger_cli(another_database_url, "import", str(tmp_path))

    assert refused.returncode == 2
    assert b"cannot read" in refused.stderr
    assert b"Traceback" not in refused.stderr
