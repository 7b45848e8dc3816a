"""The one writer of a process: a dedicated connection and the retrying
SERIALIZABLE transaction of each append, and a second connection that reads
for batches decided outside the lock.

Appends are serial per database anyway (the head lock), so the process keeps a
single connection for them instead of paying a pool acquire and reset per
append. A lost connection is replaced on the next attempt; re-running an
append is safe because every command carries its id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from .. import metrics
from ..domain.ledger import Outcome
from ..domain.merkle import Frontier
from .connection import BEGIN_SERIALIZABLE, connect, transaction, widen_send_buffer
from .head import LOCK, LogHead
from .retry import CONFLICTS, CONNECTION_LOST, NoAnswer, RetryPolicy, retrying
from .tree import read_tip
from .write_path import (
    COPY_FROM,
    AppendRequest,
    Committed,
    Decided,
    Pending,
    Sealed,
    Stale,
    decide_under_lock,
    load,
    seal,
    write,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")

#: The writer connection's ``application_name``, as ``pg_stat_activity`` shows it.
WRITER_NAME = "ledger-writer"
#: The connection that reads for decisions made outside the lock.
READER_NAME = "ledger-writer-reads"


#: Every statement of an append reaches its rows by primary key. Under the
#: default cost of a random page (4, for spinning disks) the planner would
#: rather scan a table of some thousands of rows whole than look up a hundred
#: keys in it; priced as on SSD or in cache, it looks them up.
_KEYED = {"random_page_cost": "1.1"}

#: A batch decided outside the lock is written as one statement outside a transaction
#: (see :func:`~ledger.store.write_path.write`): SERIALIZABLE as every append.
_WRITING = {**_KEYED, "default_transaction_isolation": "serializable"}

#: BEGIN and the append lock in one round trip (a simple query may hold
#: several statements): every round trip of an append is a wait that the
#: HTTP work queued meanwhile lengthens.
_BEGIN_LOCKED = f"{BEGIN_SERIALIZABLE}; {LOCK}"


def _counted(committed: Committed, started: float) -> Committed:
    """``committed`` by the attempt that began at ``started``, counted."""
    metrics.APPEND_DURATION.observe(time.perf_counter() - started)
    metrics.APPEND_BATCH_SIZE.observe(committed.commands)
    metrics.EVENT_LOG_HEAD_SEQ.set(committed.head.seq)
    return committed


class Writer:
    """Appends batches, one at a time, on a connection of its own; reads what
    batches decided outside the lock need on another
    (:mod:`ledger.store.write_path` has the states and transitions).

    ``copy_from`` is the number of events from which batches it seals are
    written by COPY (:data:`~ledger.store.write_path.COPY_FROM`).
    """

    def __init__(self, dsn: str, *, policy: RetryPolicy, clock: Clock, copy_from: int = COPY_FROM) -> None:
        self._dsn = dsn
        self._policy = policy
        self._clock = clock
        self._copy_from = copy_from
        self._conn: asyncpg.Connection | None = None
        self._reader: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        #: Attempts that failed and were retried, since start (for health and tests).
        self.retries = 0
        #: The head and tree of the log as this writer last left or read them:
        #: a frontier it need not read again while the head is still there.
        self._tip: tuple[LogHead, Frontier] | None = None
        #: Sealed batches that were decided again under the lock, found
        #: stale: the head had moved on from the one they were decided after,
        #: or a transfer they took for new was recorded already.
        self.decided_again = 0

    async def append(self, batch: Sealed | Pending) -> Committed:
        """Record ``batch`` as one transaction: a sealed batch as it was decided
        if the head of the log is still its basis; else, and a pending one,
        decided afresh under the lock.

        Raises :class:`~ledger.store.retry.Unavailable` when conflicts or a lost
        database outlast the retry policy, and
        :class:`~ledger.store.retry.NoAnswer` when the policy's time limit
        passes first: the connection is closed, and the batch may or may not
        have been recorded.
        """
        async with self._lock:
            return await retrying(lambda: self._attempt(batch), self._policy, CONFLICTS + CONNECTION_LOST)

    async def submit(self, requests: Sequence[AppendRequest]) -> list[list[Outcome]]:
        """Append ``requests`` as one batch, decided under the lock; one list
        of outcomes each (for callers with no queue in front of the writer)."""
        return (await self.append(Pending(list(requests)))).results

    async def at_head(self) -> Decided:
        """Nothing decided yet, against the log as it stands now (its head
        read on the reading connection)."""
        self._tip = await self._read(read_tip, self._tip)
        return Decided.at(*self._tip)

    async def decide(self, decided: Decided, requests: Sequence[AppendRequest]) -> None:
        """Decide ``requests`` into ``decided``, first reading what its ledger
        lacks on the reading connection, outside any transaction, but for
        the transfers they create, taken for new until the write says
        otherwise (see :func:`~ledger.store.write_path.load`). Nothing is
        written.

        The event loop gets a turn after each slice of commands, so that
        the append in flight keeps going out to the database and other
        requests are served while a large batch is decided."""
        await self._read(load, requests, decided.ledger, created=False)
        for _ in decided.deciding(requests, now=self._clock()):
            await asyncio.sleep(0)

    def seal(self, decided: Decided) -> Sealed:
        """:func:`~ledger.store.write_path.seal` ``decided`` for this writer."""
        return seal(decided, copy_from=self._copy_from)

    def _committed(self, committed: Committed, started: float) -> Committed:
        """``committed``, counted, its head and tree kept as this writer's tip."""
        self._tip = (committed.head, committed.sealed.tree)
        return _counted(committed, started)

    async def _read(self, read: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``read(connection, *args, **kwargs)`` on the reading connection,
        opened anew if it was lost; :class:`~ledger.store.retry.NoAnswer`
        (the connection closed) if the read and the opening together outlast
        the policy's time limit."""
        limit = asyncio.timeout(self._policy.time_limit)
        try:
            async with limit:
                self._reader = reader = await self._connected(self._reader, READER_NAME, _KEYED)
                return await read(reader, *args, **kwargs)
        except CONNECTION_LOST + (asyncio.CancelledError,) as error:
            if self._reader is not None:
                self._reader.terminate()
            if isinstance(error, TimeoutError) and limit.expired():
                raise NoAnswer(self._policy.time_limit) from error
            raise

    async def _attempt(self, batch: Sealed | Pending) -> Committed:
        try:
            conn = await self._connection()
            started = time.perf_counter()
            if isinstance(batch, Sealed):
                match await write(conn, batch):
                    case Committed() as committed:
                        return self._committed(committed, started)
                    case Stale() as stale:
                        self.decided_again += 1
                        batch = stale.again()
            async with transaction(conn, _BEGIN_LOCKED):
                committed = await decide_under_lock(conn, batch, now=self._clock(), copy_from=self._copy_from)
            return self._committed(committed, started)
        except asyncio.CancelledError:
            self._terminate()  # what it was last asked may be unanswered still
            raise
        except CONNECTION_LOST:
            self.close()
            self.retries += 1
            raise
        except CONFLICTS:
            self.retries += 1
            raise

    async def _connection(self) -> asyncpg.Connection:
        conn = await self._connected(self._conn, WRITER_NAME, _WRITING)
        if conn is not self._conn:
            widen_send_buffer(conn)  # it sends the appends, megabytes at a time
            self._conn = conn
        return conn

    async def _connected(
        self, conn: asyncpg.Connection | None, name: str, settings: dict[str, str]
    ) -> asyncpg.Connection:
        """``conn``, or a new connection named ``name`` if it is gone."""
        if conn is None or conn.is_closed():
            conn = await connect(self._dsn, server_settings={"application_name": name, **settings})
        return conn

    def _terminate(self) -> None:
        """Close the appending connection at once, without a word to the
        server; the next attempt opens another."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    def close(self) -> None:
        """Drop both connections: idle once nothing is appended (the
        coalescer has drained), so that dropping them loses nothing, and a
        database that stopped answering holds up no shutdown."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.terminate()
        self._terminate()
