"""The hash chain that makes the event log tamper-evident.

Each event's hash is ``sha256(previous hash || canonical bytes of the event)``;
the first event links to :data:`GENESIS`. The canonical bytes are rebuilt from
what the log stores (JSON with sorted keys, timestamps in one fixed format), so
a verifier needs nothing but the rows as read back: jsonb keeps neither key
order nor whitespace, which is why the stored text itself is never hashed.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

GENESIS = bytes(32)

_encoder = msgspec.json.Encoder(order="sorted")


# An append records all its events at one moment: formatted once, not per event.
@functools.lru_cache(maxsize=64)
def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds: ``2026-11-24T12:00:00.123456Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(value: Any) -> bytes:
    """``value`` as canonical JSON: keys sorted, no blanks, UUIDs and amounts
    as strings. An event (a struct) encodes as the object of its fields."""
    return _encoder.encode(value)


class _Hashed(msgspec.Struct, gc=False):
    """What an event's hash covers. A struct, cheaper to build and encode than
    a dict, gives the same bytes: the encoder sorts its fields, and the keys
    of ``data`` and ``metadata`` given as dicts."""

    data: Any
    metadata: Any
    recorded_at: str
    seq: int
    stream_id: UUID  # msgspec writes the canonical form, as str() does
    type: str


def event_bytes(
    *,
    seq: int,
    type: str,
    stream_id: UUID,
    data: dict[str, Any] | msgspec.Raw,
    metadata: dict[str, Any] | msgspec.Raw,
    recorded_at: datetime,
) -> bytes:
    """An event's canonical bytes: what its chain hash and its Merkle leaf
    cover. ``data`` and ``metadata`` may be given as their :func:`canonical`
    JSON already (``msgspec.Raw``), as the append does: the same bytes
    either way."""
    return _encoder.encode(_Hashed(data, metadata, format_timestamp(recorded_at), seq, stream_id, type))


def chained(previous: bytes, entry: bytes) -> bytes:
    """The chain hash of the event whose canonical bytes are ``entry``, after
    the event whose hash is ``previous``."""
    return hashlib.sha256(previous + entry).digest()
