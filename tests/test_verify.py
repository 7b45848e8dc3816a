"""ledger verify: an export checked offline against a signed checkpoint (its
chain, its Merkle root at the checkpoint's size, the signature), by the
command and by ledger/verify.py copied out on its own."""

import ast
import base64
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ledger.verify
from tests.conftest import canonical_bytes, ledger_cli, transfer_body


@pytest.fixture
async def exported(client, open_account, database_url, tmp_path):
    """A log of 20 events, its export, its checkpoint and verifier key, as files."""
    a, b = await open_account(metadata={"ü": "☕"}), await open_account()
    items = [transfer_body(a, b, f"{n}.00", metadata={"n": n}) for n in range(1, 19)]
    assert (await client.post("/v1/transfer-batches", json={"transfers": items})).status == 200
    export = tmp_path / "log.ndjson"
    assert ledger_cli(database_url, "export", "--output", str(export)).returncode == 0
    checkpoint = tmp_path / "checkpoint"
    checkpoint.write_text(await (await client.get("/v1/checkpoint")).text())
    key = await (await client.get("/v1/checkpoint/key")).text()
    return export, checkpoint, key


def verify(database_url: str, export: Path, checkpoint: Path, key: str) -> tuple[int, str]:
    done = ledger_cli(database_url, "verify", str(export), "--checkpoint", str(checkpoint), "--key", key)
    return done.returncode, done.stdout.decode().strip()


def rewritten(export: Path, edit, rechain: bool) -> None:
    """Apply ``edit`` to each event line; with ``rechain``, recompute every
    hash from the first edited line on, as a forger would."""
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    previous = bytes(32)
    for line in lines:
        edit(line)
        if rechain:
            line["hash"] = hashlib.sha256(previous + canonical_bytes(line)).hexdigest()
        previous = bytes.fromhex(line["hash"])
    export.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


def test_a_genuine_export_verifies(database_url, exported):
    assert verify(database_url, *exported) == (0, "ok")


def test_the_key_may_be_given_as_a_file(database_url, exported, tmp_path):
    export, checkpoint, key = exported
    (tmp_path / "key").write_text(key)
    assert verify(database_url, export, checkpoint, str(tmp_path / "key")) == (0, "ok")


def test_a_key_file_that_is_not_there_cannot_be_read_rather_than_fail_the_check(database_url, exported, tmp_path):
    export, checkpoint, _ = exported

    done = ledger_cli(database_url, "verify", str(export), "--checkpoint", str(checkpoint), "--key", "/no/such/key")

    assert done.returncode == 2
    assert "cannot read" in done.stderr.decode()


def test_verify_says_how_to_use_it(database_url):
    done = ledger_cli(database_url, "verify", "--help")

    assert done.returncode == 0
    assert done.stdout.decode().startswith("usage: ledger verify")


def test_an_edited_event_is_named_by_its_seq(database_url, exported):
    export, checkpoint, key = exported
    rewritten(export, lambda line: line["seq"] == 7 and line["data"].update(amount="9999.00"), rechain=False)
    code, said = verify(database_url, export, checkpoint, key)
    assert code == 1 and "seq 7" in said


def test_an_edit_with_the_chain_recomputed_fails_the_checkpoints_root(database_url, exported):
    export, checkpoint, key = exported
    rewritten(export, lambda line: line["seq"] == 7 and line["data"].update(amount="9999.00"), rechain=True)
    code, said = verify(database_url, export, checkpoint, key)
    assert code == 1 and "root" in said


def test_a_missing_event_is_named_by_its_seq(database_url, exported):
    export, checkpoint, key = exported
    lines = export.read_text().splitlines(keepends=True)
    export.write_text("".join(lines[:11] + lines[12:]))
    code, said = verify(database_url, export, checkpoint, key)
    assert code == 1 and "seq 12" in said


def test_an_export_shorter_than_the_checkpoint_fails(database_url, exported):
    export, checkpoint, key = exported
    export.write_text("".join(export.read_text().splitlines(keepends=True)[:15]))
    code, said = verify(database_url, export, checkpoint, key)
    assert code == 1 and "seq 16" in said


async def test_events_after_the_checkpoint_are_checked_by_their_chain(client, database_url, exported, open_account):
    export, checkpoint, key = exported
    await open_account()
    assert ledger_cli(database_url, "export", "--output", str(export)).returncode == 0
    assert verify(database_url, export, checkpoint, key) == (0, "ok")


def test_a_forged_checkpoint_fails_its_signature(database_url, exported):
    export, checkpoint, key = exported
    origin, size, root, *rest = checkpoint.read_text().split("\n")
    checkpoint.write_text("\n".join([origin, str(int(size) - 1), root, *rest]))
    code, said = verify(database_url, export, checkpoint, key)
    assert code == 1 and "signature" in said


def test_another_key_is_refused(database_url, exported, tmp_path):
    export, checkpoint, _ = exported
    other = ledger_cli(database_url, "keygen", str(tmp_path / "other.pem")).stdout.decode().strip()
    code, said = verify(database_url, export, checkpoint, other)
    assert code == 1 and "signature" in said


def test_a_field_the_event_line_does_not_have_is_refused_naming_its_seq(database_url, exported):
    export, checkpoint, key = exported
    # Outside the hash: only refusing it makes `ok` cover every field of the file.
    rewritten(export, lambda line: line["seq"] == 5 and line.update(note="injected"), rechain=False)
    code, said = verify(database_url, export, checkpoint, key)
    assert code == 1 and "seq 5: not an event line" in said


def test_a_field_given_twice_is_refused_naming_its_seq(database_url, exported):
    export, checkpoint, key = exported
    lines = export.read_text().splitlines(keepends=True)
    # Readers differ on which of the two counts: the hash covers one of them.
    lines[2] = '{"data":{"amount":"0.00"},' + lines[2][1:]
    export.write_text("".join(lines))
    code, said = verify(database_url, export, checkpoint, key)
    assert code == 1 and "seq 3: not an event line" in said


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda line: line[:-1] + b"\r\n", id="crlf"),
        pytest.param(lambda line: b"\n" + line, id="blank-line-before"),
    ],
)
def test_a_line_not_written_as_the_ledger_writes_it_is_refused(database_url, exported, edit):
    export, checkpoint, key = exported
    lines = export.read_bytes().splitlines(keepends=True)
    lines[3] = edit(lines[3])
    export.write_bytes(b"".join(lines))
    code, said = verify(database_url, export, checkpoint, key)
    assert code == 1 and "seq 4: not an event line" in said


def test_a_hash_in_uppercase_hex_is_refused(database_url, exported):
    export, checkpoint, key = exported
    rewritten(export, lambda line: line["seq"] == 6 and line.update(hash=line["hash"].upper()), rechain=False)
    code, said = verify(database_url, export, checkpoint, key)
    assert code == 1 and "seq 6: not an event line" in said


def test_a_checkpoint_with_carriage_returns_is_not_a_signed_note(database_url, exported):
    export, checkpoint, key = exported
    checkpoint.write_bytes(checkpoint.read_bytes().replace(b"\n", b"\r\n"))
    code, said = verify(database_url, export, checkpoint, key)
    assert code == 1 and "not a signed note" in said


@pytest.mark.parametrize("size", ["0333", "+333", " 333", "-1", "\u0663"])
def test_a_tree_size_not_in_plain_decimal_is_malformed(size):
    root = base64.b64encode(bytes(32)).decode()
    with pytest.raises(ledger.verify.Invalid, match="tree size is not in plain decimal"):
        ledger.verify.parse_checkpoint(f"example.com/log\n{size}\n{root}\n")


def test_a_bad_signature_is_said_before_the_export_is_opened(database_url, exported, tmp_path):
    _, checkpoint, _ = exported
    other = ledger_cli(database_url, "keygen", str(tmp_path / "other.pem")).stdout.decode().strip()
    code, said = verify(database_url, tmp_path / "no-such-export", checkpoint, other)
    assert code == 1 and "signature" in said


def test_the_standalone_verifier_needs_only_the_standard_library_and_cryptography():
    tree = ast.parse(Path(ledger.verify.__file__).read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - set(sys.stdlib_module_names) == {"cryptography"}


def test_the_verifier_copied_out_checks_an_export_on_its_own(exported, tmp_path):
    export, checkpoint, key = exported
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(ledger.verify.__file__, alone / "verify.py")
    args = [sys.executable, "-I", "verify.py", str(export), "--checkpoint", str(checkpoint), "--key", key]
    done = subprocess.run(args, cwd=alone, capture_output=True, timeout=60)
    assert (done.returncode, done.stdout.decode().strip()) == (0, "ok"), done.stderr
