"""The one writer of a process: a dedicated connection and the retrying
SERIALIZABLE transaction around each append.

Appends are serial per database anyway (the head lock), so the process keeps a
single connection for them instead of paying a pool acquire and reset per
append. A lost connection is replaced on the next attempt; re-running an
append is safe because every command carries its id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import asyncpg

from ..domain.ledger import Outcome
from .append import AppendRequest, append
from .connection import connect
from .retry import CONFLICTS, CONNECTION_LOST, RetryPolicy, retrying

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: The writer connection's ``application_name``, as ``pg_stat_activity`` shows it.
WRITER_NAME = "ledger-writer"


class Writer:
    def __init__(self, dsn: str, *, policy: RetryPolicy, clock: Clock) -> None:
        self._dsn = dsn
        self._policy = policy
        self._clock = clock
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        #: Attempts that failed and were retried, since start (for health and tests).
        self.retries = 0

    async def append(self, requests: Sequence[AppendRequest]) -> list[list[Outcome]]:
        """Decide and record ``requests`` as one transaction; one outcome list each.

        Raises :class:`~ledger.store.retry.Unavailable` when conflicts or a lost
        database outlast the retry policy.
        """
        async with self._lock:
            return await retrying(
                lambda: self._attempt(requests), self._policy, CONFLICTS + CONNECTION_LOST
            )

    async def _attempt(self, requests: Sequence[AppendRequest]) -> list[list[Outcome]]:
        try:
            conn = await self._connection()
            async with conn.transaction(isolation="serializable"):
                return await append(conn, requests, now=self._clock())
        except CONNECTION_LOST:
            await self.close()
            self.retries += 1
            raise
        except CONFLICTS:
            self.retries += 1
            raise

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self._dsn, server_settings={"application_name": WRITER_NAME})
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except (asyncio.TimeoutError, *CONNECTION_LOST):
                conn.terminate()
