"""ledger export: the event log as NDJSON, one /v1/events line per event in
seq order, built by PostgreSQL and sent by COPY; --after-seq and --output."""

import hashlib
import io
import json
import uuid

import pytest

from ledger.store.export import export
from tests.conftest import canonical_bytes, ledger_cli, transfer_body
from tests.test_cli import UNREACHABLE

AWKWARD = {"quote": 'say "hi"', "back\\slash": "a\\b", "tab": "\t", "ünï": "☕", "n": [1, "2.5", None, True, 2**53 - 1]}


@pytest.fixture
async def logged(client, open_account):
    """A log with awkward text in it: quotes, backslashes, tabs, non-ASCII."""
    a, b = await open_account(metadata=AWKWARD), await open_account()
    paid = transfer_body(a, b, "3.00", code='c"\\', metadata=AWKWARD)
    await client.post("/v1/transfers", json=paid, headers={"X-Request-ID": 'r"1'})
    await client.post(f"/v1/transfers/{paid['id']}/reverse", json={"id": str(uuid.uuid4()), "amount": "1.00"})
    response = await client.get("/v1/events", params={"after_seq": "0"})
    return [json.loads(line) for line in (await response.text()).splitlines() if line]


def ledger_export(database_url, *args):
    return ledger_cli(database_url, "export", *args)


async def test_an_export_holds_the_lines_the_events_stream_serves(db, logged):
    out = io.BytesIO()

    count = await export(db, out)

    lines = out.getvalue().decode().splitlines()
    assert count == len(lines) == len(logged)
    assert [json.loads(line) for line in lines] == logged


async def test_the_chain_rebuilds_from_an_export(db, logged):
    out = io.BytesIO()
    await export(db, out)

    previous = bytes(32)
    for line in map(json.loads, out.getvalue().decode().splitlines()):
        previous = hashlib.sha256(previous + canonical_bytes(line)).digest()
        assert previous.hex() == line["hash"]
    assert previous == await db.fetchval("SELECT hash FROM ledger_head")


async def test_ledger_export_writes_to_stdout_or_a_file_after_a_seq(database_url, logged, tmp_path):
    whole = ledger_export(database_url)
    assert whole.returncode == 0, whole.stderr
    assert [json.loads(line) for line in whole.stdout.decode().splitlines()] == logged

    target = tmp_path / "log.ndjson"
    tail = ledger_export(database_url, "--after-seq", "2", "--output", str(target))
    assert tail.returncode == 0, tail.stderr
    assert [json.loads(line) for line in target.read_text().splitlines()] == logged[2:]
    assert tail.stdout == b""


@pytest.mark.parametrize("seq", ["-1", "ten", str(2**63)])
def test_ledger_export_refuses_a_seq_that_is_not_one(database_url, seq):
    refused = ledger_export(database_url, "--after-seq", seq)
    assert refused.returncode == 2
    assert b"not a seq" in refused.stderr
    assert b"Traceback" not in refused.stderr


def test_ledger_export_to_a_file_it_cannot_write_says_so(database_url, tmp_path):
    refused = ledger_export(database_url, "--output", str(tmp_path / "no" / "such" / "dir" / "log.ndjson"))
    assert refused.returncode == 2
    assert b"cannot write the export" in refused.stderr
    assert b"Traceback" not in refused.stderr


def test_an_export_that_fails_leaves_the_file_it_would_replace_as_it_was(tmp_path):
    earlier = tmp_path / "log.ndjson"
    earlier.write_bytes(b"an earlier export\n")

    failed = ledger_export(UNREACHABLE, "--output", str(earlier))

    assert failed.returncode == 2
    assert earlier.read_bytes() == b"an earlier export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["log.ndjson"]
