"""Folding the event log back into a :class:`Ledger`.

The log is the truth: the balances this fold gives are what the stored
projections must hold. Reading goes through a server-side cursor, so memory
grows with the number of accounts and transfers, not of events.
"""

from __future__ import annotations

import asyncpg

from ..domain.chain import GENESIS, event_hash
from ..domain.events import RecordedEvent, event_from_data
from ..domain.ledger import Ledger

_EVENTS = "SELECT seq, type, stream_id, data, metadata, recorded_at, hash FROM events ORDER BY seq"


class ChainBroken(Exception):
    def __init__(self, seq: int) -> None:
        super().__init__(f"event {seq} does not link to its predecessor")
        self.seq = seq


async def fold_log(conn: asyncpg.Connection, *, prefetch: int = 1000) -> Ledger:
    """Replay every event in one snapshot; verify the hash chain on the way.

    Raises :class:`ChainBroken` at the first event whose hash does not follow
    from its predecessor's, and ``ValueError`` on a gap in seq.
    """
    ledger = Ledger()
    previous = GENESIS
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor(_EVENTS, prefetch=prefetch):
            expected = event_hash(
                previous,
                seq=row["seq"],
                type=row["type"],
                stream_id=row["stream_id"],
                data=row["data"],
                metadata=row["metadata"],
                recorded_at=row["recorded_at"],
            )
            if expected != row["hash"]:
                raise ChainBroken(row["seq"])
            previous = row["hash"]
            ledger.apply(
                RecordedEvent(
                    seq=row["seq"],
                    event=event_from_data(row["type"], row["data"]),
                    recorded_at=row["recorded_at"],
                    metadata=row["metadata"],
                )
            )
    return ledger
