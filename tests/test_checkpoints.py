"""Signed checkpoints: the C2SP tlog-checkpoint of the log's head, signed as
a C2SP signed note with Ed25519, checked here from the specs' own words
(key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4])."""

import asyncio
import base64
import dataclasses
import hashlib
import os
import stat
import time

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.api.app import StartupError, create_app
from tests.conftest import canonical_bytes, ledger_cli, transfer_body
from tests.test_merkle import mth
from tests.test_verifiable_log import served_events


def verify_note(note: str, verifier_key: str) -> str:
    """The note's text if it carries a valid signature by ``verifier_key``."""
    name, key_id, encoded = verifier_key.strip().split("+", 2)
    raw = base64.b64decode(encoded)
    assert raw[0] == 0x01 and len(raw) == 33
    assert hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() == key_id
    text, signatures = note.rsplit("\n\n", 1)
    text += "\n"
    [line] = signatures.splitlines()
    dash, signer, signature = line.split(" ")
    assert dash == "\u2014" and signer == name
    signature = base64.b64decode(signature)
    assert signature[:4].hex() == key_id
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(signature[4:], text.encode())  # raises if it fails
    return text


async def checkpoint_of(client) -> tuple[str, str]:
    response = await client.get("/v1/checkpoint")
    assert response.status == 200 and response.content_type == "text/plain"
    key = await client.get("/v1/checkpoint/key")
    assert key.status == 200
    return await response.text(), await key.text()


async def test_a_checkpoint_is_the_signed_size_and_root_of_the_log(client, open_account):
    a, b = await open_account(), await open_account()
    for amount in ("1.00", "2.00", "3.00"):
        await client.post("/v1/transfers", json=transfer_body(a, b, amount))

    note, key = await checkpoint_of(client)

    origin, size, root, end = verify_note(note, key).split("\n")
    events = await served_events(client)
    assert (origin, int(size), end) == ("ledger", len(events), "")
    assert base64.b64decode(root) == mth([canonical_bytes(e) for e in events])


async def test_the_verifier_key_names_the_origin_and_the_key_id_of_the_signatures(client):
    note, key = await checkpoint_of(client)
    name, key_id, _ = key.strip().split("+", 2)
    signature = base64.b64decode(note.rsplit(" ", 1)[1])
    assert name == "ledger" and signature[:4].hex() == key_id and len(signature) == 4 + 64


async def test_a_flipped_byte_of_a_checkpoint_fails_its_signature(client):
    note, key = await checkpoint_of(client)
    forged = note.replace("\n0\n", "\n1\n", 1)
    assert forged != note
    with pytest.raises(InvalidSignature):
        verify_note(forged, key)


async def test_checkpoints_asked_for_together_are_signed_once(client):
    notes = await asyncio.gather(*(client.get("/v1/checkpoint") for _ in range(20)))
    assert len({await n.text() for n in notes}) == 1


async def test_a_checkpoint_follows_the_head_within_a_second(client, open_account):
    first, key = await checkpoint_of(client)
    await open_account()
    await open_account()
    written = time.monotonic()
    while True:
        note, _ = await checkpoint_of(client)
        if int(verify_note(note, key).split("\n")[1]) == 2:
            break
        assert time.monotonic() - written < 1.5, "the checkpoint is older than a second"
    assert first != note


async def test_without_a_signing_key_checkpoints_are_refused_and_proofs_served(settings, aiohttp_client, open_account):
    unsigned = await aiohttp_client(create_app(dataclasses.replace(settings, signing_key_file=None)))
    for path in ("/v1/checkpoint", "/v1/checkpoint/key"):
        response = await unsigned.get(path)
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "no_signing_key"
    await open_account()
    assert (await unsigned.get("/v1/proofs/inclusion", params={"seq": "1"})).status == 200


async def test_a_bad_key_file_stops_the_start_without_showing_its_content(settings, tmp_path, aiohttp_client):
    bad = tmp_path / "key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nTOPSECRETTOPSECRET\n-----END PRIVATE KEY-----\n")
    with pytest.raises(StartupError) as raised:
        await aiohttp_client(create_app(dataclasses.replace(settings, signing_key_file=bad)))
    assert str(bad) in str(raised.value) and "TOPSECRET" not in str(raised.value)


async def test_the_private_key_is_in_no_response(client, signing_key_file):
    pem = signing_key_file.read_text()
    secret = "".join(pem.splitlines()[1:-1])
    for path in ("/v1/checkpoint", "/v1/checkpoint/key", "/openapi.json", "/metrics", "/health/ready"):
        assert secret not in await (await client.get(path)).text()


def test_keygen_writes_a_key_only_its_owner_can_read_and_prints_its_verifier_key(database_url, tmp_path):
    path = tmp_path / "new.pem"
    made = ledger_cli(database_url, "keygen", str(path))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    name, key_id, encoded = made.stdout.decode().strip().split("+", 2)
    assert name == "ledger" and len(bytes.fromhex(key_id)) == 4 and len(base64.b64decode(encoded)) == 33
    assert path.read_text() not in made.stdout.decode() + made.stderr.decode()


def test_keygen_never_overwrites_a_key(database_url, tmp_path):
    path = tmp_path / "kept.pem"
    path.write_text("mine")
    again = ledger_cli(database_url, "keygen", str(path))
    assert again.returncode != 0 and b"exists" in again.stderr
    assert path.read_text() == "mine"


async def test_the_key_keygen_prints_is_the_one_the_service_signs_with(settings, tmp_path, aiohttp_client):
    path = tmp_path / "ops.pem"
    printed = ledger_cli(settings.database_url, "keygen", str(path)).stdout.decode()
    served = await aiohttp_client(create_app(dataclasses.replace(settings, signing_key_file=path)))
    assert await (await served.get("/v1/checkpoint/key")).text() == printed
    verify_note(await (await served.get("/v1/checkpoint")).text(), printed)


async def test_the_embedded_default_makes_its_key_once_and_keeps_it(service, tmp_path):
    first = await service()
    key = await _get(first.url + "/v1/checkpoint/key")
    await first.stop()
    kept = tmp_path / "data" / "signing-key.pem"
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600

    again = await service()
    assert await _get(again.url + "/v1/checkpoint/key") == key
    await again.stop()


async def _get(url: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()
