"""The head of the log: the one ``ledger_head`` row, and the lock on it.

The row holds the seq and hash of the last event and the projections'
epoch. Every append moves it in the transaction that adds its events (see
:mod:`ledger.store.write_path`), so it is the one point where appends are
ordered, and its hash commits to every event before it.
"""

from __future__ import annotations

from typing import NamedTuple

from .connection import Conn

#: The channel that carries the new head seq after each append.
NOTIFY_CHANNEL = "ledger_events"

#: The append lock: taken first by every append decided under it, and by
#: whatever must see no append happen while it runs (repair, rebuild).
LOCK = "LOCK TABLE ledger_head IN EXCLUSIVE MODE"

#: Run by whatever rewrites projections outside an append (repair, rebuild),
#: holding :data:`LOCK`: batches decided against what was there before are
#: then decided again.
NEW_EPOCH = "UPDATE ledger_head SET epoch = epoch + 1"

_READ = "SELECT seq, hash, epoch FROM ledger_head"


class LogHead(NamedTuple):
    """The head of the log: its last seq and hash, and the projections' epoch."""

    seq: int
    hash: bytes
    epoch: int


async def read_head(conn: Conn) -> LogHead:
    """The head of the log as ``conn`` sees it."""
    row = await conn.fetchrow(_READ)
    assert row is not None  # ledger_head holds exactly one row (migration 0001)
    return LogHead(*row)
