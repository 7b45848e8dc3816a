"""Check a ledger export offline against a signed checkpoint.

    python verify.py EXPORT --checkpoint CHECKPOINT --key KEY
    (or: ledger verify EXPORT --checkpoint CHECKPOINT --key KEY)

EXPORT is what ``ledger export`` writes (one event a line, in seq order,
from seq 1), CHECKPOINT a file holding what ``GET /v1/checkpoint`` answered,
KEY the verifier key ``GET /v1/checkpoint/key`` answers (or a file holding
it). Checked, reading the export once, line by line, so that its size does
not matter:

1. the checkpoint's signature, by the key (C2SP signed-note, Ed25519), and
   its form (C2SP tlog-checkpoint), before the export is opened;
2. each line of the export is one event as the ledger writes it: a JSON
   object of exactly the fields of an event line, each once, ``hash`` in
   lowercase hex, the line ended by a newline alone;
3. seq runs 1, 2, 3… and each event's ``hash`` is SHA-256(previous hash ||
   its canonical bytes), the first's previous hash 32 zero bytes;
4. the RFC 9162 Merkle root of the first ``tree size`` events is the
   checkpoint's root.

Prints ``ok`` and exits 0, or names what is wrong (the first bad seq, where
there is one) and exits 1; 2 for files that cannot be read.

This module is its own whole: it needs Python's standard library and the
``cryptography`` package, nothing of the ledger, so that anyone can copy it
out and check a ledger without trusting the service that keeps it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

#: What an event's canonical bytes cover (keys sorted, no whitespace, UTF-8).
CANONICAL_FIELDS = ("data", "metadata", "recorded_at", "seq", "stream_id", "type")
#: Every field of an event line: the canonical ones and the hash.
LINE_FIELDS = frozenset(CANONICAL_FIELDS) | {"hash"}


class Invalid(Exception):
    """What is wrong, said for a person."""


# -- signed notes (https://c2sp.org/signed-note) -----------------------------


def parse_verifier_key(text: str) -> tuple[str, bytes, Ed25519PublicKey]:
    """``<name>+<hex key ID>+<base64(0x01 || public key)>``: name, key ID, key."""
    try:
        name, key_id_hex, encoded = text.strip().split("+", 2)
        key_id, raw = bytes.fromhex(key_id_hex), base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        raise Invalid("the key is not a note verifier key (<name>+<hex key id>+<base64 key>)") from None
    if len(key_id) != 4 or len(raw) != 33 or raw[0] != 1:
        raise Invalid("the key is not an Ed25519 note verifier key")
    if hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4] != key_id:
        raise Invalid("the key's ID does not match its name and public key")
    return name, key_id, Ed25519PublicKey.from_public_bytes(raw[1:])


def verified_text(note: str, key: str) -> str:
    """The text of ``note``, if a signature on it by ``key`` verifies."""
    name, key_id, public = parse_verifier_key(key)
    if any(c < " " and c != "\n" for c in note) or not note.endswith("\n"):
        raise Invalid("the checkpoint is not a signed note (control characters, or no newline at its end)")
    text, separator, signatures = note.rpartition("\n\n")
    if not separator:
        raise Invalid("the checkpoint is not a signed note (no blank line before its signatures)")
    text += "\n"
    for line in signatures.splitlines():
        signer, _, signature = line.removeprefix("\u2014 ").partition(" ")
        if not line.startswith("\u2014 ") or signer != name:
            continue
        try:
            decoded = base64.b64decode(signature, validate=True)
        except binascii.Error:
            continue
        if decoded[:4] != key_id:
            continue
        try:
            public.verify(decoded[4:], text.encode())
        except InvalidSignature:
            raise Invalid(f"the checkpoint's signature by {name} does not verify") from None
        return text
    raise Invalid(f"the checkpoint carries no signature by the key {name}")


def parse_checkpoint(text: str) -> tuple[str, int, bytes]:
    """A C2SP tlog-checkpoint's origin, tree size and root hash (``text``
    is a note's text: it ends in a newline)."""
    lines = text.split("\n")[:-1]
    try:
        origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
    except (IndexError, ValueError, binascii.Error):
        raise Invalid("the checkpoint is not origin, tree size and base64 root hash, a line each") from None
    if not all(lines) or size < 0 or str(size) != lines[1] or len(root) != 32:
        raise Invalid(
            "the checkpoint's lines are malformed: one is empty, the tree size is not"
            " in plain decimal, or the root is not 32 bytes"
        )
    return origin, size, root


# -- the log (RFC 9162 section 2.1) ------------------------------------------


def canonical_bytes(event: dict[str, object]) -> bytes:
    return json.dumps(
        {name: event[name] for name in CANONICAL_FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


class TreeRoot:
    """The Merkle root of leaves added one by one, in O(log n) memory: the
    complete subtrees along the tree's right edge, as (size, hash)."""

    def __init__(self) -> None:
        self._edge: list[tuple[int, bytes]] = []

    def add(self, entry: bytes) -> None:
        size, node = 1, hashlib.sha256(b"\x00" + entry).digest()
        while self._edge and self._edge[-1][0] == size:
            size, node = size * 2, hashlib.sha256(b"\x01" + self._edge.pop()[1] + node).digest()
        self._edge.append((size, node))

    def root(self) -> bytes:
        if not self._edge:
            return hashlib.sha256(b"").digest()
        node = self._edge[-1][1]
        for _, left in reversed(self._edge[:-1]):
            node = hashlib.sha256(b"\x01" + left + node).digest()
        return node


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object's members, refused if a key comes twice (readers differ
    on which one counts)."""
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("a key given twice")
    return members


def parse_line(line: bytes) -> tuple[dict[str, object], bytes]:
    """An export's line: the event and its hash; ValueError if it is not one
    event line as the ledger writes it."""
    if not line.endswith(b"\n") or line.endswith(b"\r\n"):
        raise ValueError("a line ends in a newline alone")
    event = json.loads(line, object_pairs_hook=_unique_keys)
    if not isinstance(event, dict) or event.keys() != LINE_FIELDS:
        raise ValueError("an object of the event line's fields")
    given = event["hash"]
    if not isinstance(given, str) or len(given) != 64 or given.strip("0123456789abcdef"):
        raise ValueError("a hash of 64 lowercase hex digits")
    return event, bytes.fromhex(given)


def verify(lines: Iterable[bytes], size: int, root: bytes) -> int:
    """Check the export ``lines`` and that the root of its first ``size``
    events is ``root``; the number of events read."""
    previous, seq, tree = bytes(32), 0, TreeRoot()
    for line in lines:
        seq += 1
        try:
            event, given = parse_line(line)
            entry = canonical_bytes(event)
        except (ValueError, TypeError):
            raise Invalid(f"seq {seq}: not an event line of an export, as the ledger writes it") from None
        if event["seq"] != seq:
            raise Invalid(f"seq {seq}: the line holds seq {event['seq']!r}")
        previous = hashlib.sha256(previous + entry).digest()
        if previous != given:
            raise Invalid(f"seq {seq}: its hash does not follow from the event and the one before")
        if seq <= size:
            tree.add(entry)
    if seq < size:
        raise Invalid(f"seq {seq + 1}: the export ends at seq {seq}, before the checkpoint's {size} events")
    if tree.root() != root:
        raise Invalid(f"the first {size} events do not have the checkpoint's root: the log they were read from differs")
    return seq


def _key_text(given: str) -> str:
    """``--key``: the text of the file it names, or itself when it is a
    verifier key (``<name>+<hash>+<key>``); else :class:`OSError`, so that a
    key file's path mistyped is not taken for a key that fails the check."""
    path = Path(given)
    if path.is_file() or given.count("+") < 2:
        return path.read_text(encoding="utf-8")
    return given


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="Check a ledger export offline against a signed checkpoint."
    )
    parser.add_argument("export", metavar="FILE", help="the NDJSON export (`ledger export`)")
    parser.add_argument("--checkpoint", required=True, metavar="CP", help="a file holding GET /v1/checkpoint")
    parser.add_argument("--key", required=True, metavar="KEY", help="GET /v1/checkpoint/key, or a file holding it")
    args = parser.parse_args(argv)
    try:
        with open(args.checkpoint, encoding="utf-8", newline="") as file:  # a CR is kept, to be refused
            note = file.read()
        key = _key_text(args.key)
        origin, size, root = parse_checkpoint(verified_text(note, key))
        if origin != key.split("+")[0].strip():
            raise Invalid(f"the checkpoint is of the log {origin!r}, not of the key's")
        with open(args.export, "rb") as export:
            verify(export, size, root)
    except (OSError, UnicodeDecodeError) as error:
        print(f"cannot read: {error}", file=sys.stderr)
        return 2
    except Invalid as error:
        print(f"not ok: {error}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
