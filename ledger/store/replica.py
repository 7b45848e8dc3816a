"""A streaming replica for long reads: whether it is a standby, and how far
behind the primary it is."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

#: ``replay_lag_seconds``: how old the last replayed commit is while WAL
#: received is still waiting to be replayed, else 0 (caught up with what it has).
_STATE = """
    SELECT pg_is_in_recovery() AS standby,
           (SELECT seq FROM ledger_head) AS head_seq,
           CASE WHEN pg_is_in_recovery()
                 AND pg_last_wal_receive_lsn() IS DISTINCT FROM pg_last_wal_replay_lsn()
                THEN coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8
                ELSE 0 END AS replay_lag_seconds
"""


@dataclass(frozen=True, slots=True)
class ReplicaState:
    #: ``pg_is_in_recovery()``: false for a primary given as the replica.
    standby: bool
    #: The head of the log as the replica has replayed it.
    head_seq: int
    replay_lag_seconds: float


async def read_state(dsn: str, *, timeout: float = 2.0) -> ReplicaState:
    """The replica's state, on a connection of its own (so that busy stream
    connections never make it look down). Raises what connecting raises."""
    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        row = await conn.fetchrow(_STATE, timeout=timeout)
    finally:
        # Bounded too: a replica that stopped answering may not answer the
        # cancellation of a read given up on (asyncpg then aborts).
        await conn.close(timeout=timeout)
    assert row is not None  # the query returns one row
    return ReplicaState(row["standby"], row["head_seq"], row["replay_lag_seconds"])
