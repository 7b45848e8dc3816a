"""Expiry: the service itself records that a pending transfer's deadline passed.

Every process sweeps: it asks for pending transfers past their deadline (a
partial index keeps that cheap) and appends an ``ExpireTransfer`` for each
through the same path as every other write. Appends are serial per
database and the domain records an expiry only for a transfer still pending,
so processes sweeping at once never record one twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from ..domain.commands import ExpireTransfer
from ..domain.ledger import Outcome, Recorded
from .connection import dropped_if_cancelled
from .retry import CONNECTION_LOST, Unavailable, why_away
from .write_path import AppendRequest
from .writer import Clock

#: What submits commands to the write path: the coalescer, or a writer alone.
Submitter = Callable[[Sequence[AppendRequest]], Awaitable[list[list[Outcome]]]]

log = logging.getLogger(__name__)

#: What the log records as the cause of an expiry event.
EXPIRY_METADATA = {"cause": "timeout"}

_DUE = """
    SELECT id FROM transfers
    WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= $1
    ORDER BY expires_at LIMIT $2
"""


class Expirer:
    def __init__(
        self, pool: asyncpg.Pool, submit: Submitter, clock: Clock, *, interval: float, batch: int = 8190
    ) -> None:
        self._pool = pool
        self._submit = submit
        self._clock = clock
        self._interval = interval
        self._batch = batch

    async def sweep(self) -> int:
        """Record the expiry of every pending transfer due now; return how many
        this call recorded (those another process expired first are not counted)."""
        recorded = 0
        while True:
            async with self._pool.acquire() as conn, dropped_if_cancelled(conn):
                due = await conn.fetch(_DUE, self._clock(), self._batch)
            if not due:
                return recorded
            [outcomes] = await self._submit(
                [AppendRequest([ExpireTransfer(row["id"]) for row in due], metadata=EXPIRY_METADATA)]
            )
            now_recorded = sum(isinstance(o, Recorded) for o in outcomes)
            recorded += now_recorded
            # A short page was the last. A page of which nothing could be
            # expired (the writer's clock behind ours) would come back the same.
            if len(due) < self._batch or not now_recorded:
                return recorded

    async def run(self) -> None:
        """Sweep every ``interval`` seconds until cancelled; a sweep that fails
        is tried again next time. While the database is away (out of reach,
        not answering, or its writes refused) that is logged once, without a
        traceback, and once more when a sweep succeeds again: an outage is two
        lines, not one a second. Any other failure is logged with its
        traceback every time."""
        away = False
        while True:
            try:
                count = await self.sweep()
            except CONNECTION_LOST + (Unavailable,) as error:
                if not away:
                    log.warning(
                        "expiry sweeps fail while the database is away (%s); retrying every %g s",
                        why_away(error),
                        self._interval,
                    )
                away = True
            except Exception:
                log.exception("expiry sweep failed; trying again in %s s", self._interval)
            else:
                if away:
                    log.info("expiry sweeps succeed again")
                away = False
                if count:
                    log.info("expired %d pending transfer(s)", count)
            await asyncio.sleep(self._interval)
