"""The log's signing key, and the C2SP signed notes it signs.

The private key is read and used here and nowhere else: a :class:`NoteSigner`
holds it, signs note texts with it, and shows only its name, key ID and
public key (its ``repr`` included), so the key cannot reach a log line, a
response or an error message. A key is an Ed25519 private key in a PKCS#8
PEM file, unencrypted, readable by the service's user alone.

Formats (https://c2sp.org/signed-note): a signed note is its text (ending
in a newline), a blank line, and one line per signature,
``— <name> <base64(key ID || signature)>``; the key ID is the first four
bytes of SHA-256(name || 0x0A || 0x01 || public key), 0x01 naming Ed25519;
the verifier key is ``<name>+<hex key ID>+<base64(0x01 || public key)>``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: The signature type byte of Ed25519 in signed notes.
ED25519 = b"\x01"


class KeyFileError(Exception):
    """A signing key file that cannot be used; the message names the file and
    what is wrong with it, never its content."""


def valid_name(name: str) -> bool:
    """A key name (and a log's origin) as signed notes allow: not empty, no
    space, no ``+``, nothing outside printable text."""
    return bool(name) and name.isprintable() and not any(c.isspace() or c == "+" for c in name)


class NoteSigner:
    """Signs note texts as ``name`` with an Ed25519 key."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        assert valid_name(name), name
        self.name = name
        self._key = key
        self._public = key.public_key().public_bytes_raw()
        #: The key ID of signature lines, as the spec recommends computing it.
        self.key_id = hashlib.sha256(name.encode() + b"\n" + ED25519 + self._public).digest()[:4]

    def __repr__(self) -> str:
        return f"NoteSigner({self.verifier_key!r})"

    @property
    def verifier_key(self) -> str:
        """What a verifier needs: ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(ED25519 + self._public).decode()}"

    def sign(self, text: str) -> str:
        """``text`` (which must end in a newline) as a note signed by this key."""
        assert text.endswith("\n"), "a note's text ends in a newline"
        signature = self._key.sign(text.encode())
        return f"{text}\n\u2014 {self.name} {base64.b64encode(self.key_id + signature).decode()}\n"


def load_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in the PKCS#8 PEM file ``path``."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise KeyFileError(f"cannot read the signing key file {path}: {error.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(
            f"the signing key file {path} is not an unencrypted PKCS#8 PEM private key"
            " (`ledger keygen PATH` writes one)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"the signing key file {path} holds a key that is not Ed25519")
    return key


def write_new_key(path: Path) -> Ed25519PrivateKey:
    """A new key, written to ``path`` (which must not exist) as PKCS#8 PEM,
    readable and writable by its owner only (mode 0600) from the start."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists already; a signing key is never overwritten") from None
    except OSError as error:
        raise KeyFileError(f"cannot create the signing key file {path}: {error.strerror}") from None
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    return key


#: The key the embedded default keeps in its data directory.
EMBEDDED_KEY_FILE = "signing-key.pem"


def embedded_key_file(data_dir: Path) -> Path:
    """The embedded default's key file in ``data_dir``, made on first use and
    kept from then on."""
    path = data_dir / EMBEDDED_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            write_new_key(path)
        except KeyFileError:
            if not path.exists():  # else another process made it first
                raise
    return path
