"""How a following stream learns that the log has grown.

On the primary, every append NOTIFYs the new head (:data:`~.append.NOTIFY_CHANNEL`)
and a follower LISTENs on its own stream connection. A standby delivers no
NOTIFY, so on a replica one :class:`HeadPoller` per process reads the head
every ``interval`` seconds and wakes every follower of that process when it
moved.

Either way a follower subscribes before its first read, and each wake-up
comes after a change it may not have read yet, so it never waits while an
event it has not seen is visible: it reads after its last seq again, and a
snapshot of either server holds a gapless prefix of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import asyncpg

from .connection import Conn
from .head import NOTIFY_CHANNEL
from .retry import CANNOT_OPEN

log = logging.getLogger(__name__)

#: Called with the seq the head of the log moved to, or ``None`` when that
#: is not known: the log may have grown.
Wake = Callable[[int | None], None]

_HEAD = "SELECT seq FROM ledger_head"


class Wakeups(Protocol):
    def subscribed(self, conn: Conn, wake: Wake) -> contextlib.AbstractAsyncContextManager[None]:
        """For the block, ``wake(head)`` is called whenever the log may have
        grown. ``conn`` is not used after it: its owner closes it, which ends
        whatever it listened to (an UNLISTEN would wait on a database that may
        not answer, as the service stops)."""
        ...


class Notifications:
    """Wake-ups from the primary's NOTIFY, on the follower's own connection,
    with the head each append left (its payload)."""

    @contextlib.asynccontextmanager
    async def subscribed(self, conn: Conn, wake: Wake) -> AsyncIterator[None]:
        def notified(_conn: object, _pid: object, _channel: object, payload: object) -> None:
            wake(int(payload) if isinstance(payload, str) and payload.isdigit() else None)

        await conn.add_listener(NOTIFY_CHANNEL, notified)
        yield


class HeadPoller:
    """Wake-ups from reading a replica's head every ``interval`` seconds, one
    read for all the followers of this process, and none while there are none.

    It reads on a connection of its own: the followers hold the stream
    connections while they wait for it.
    """

    def __init__(self, dsn: str, interval: float) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._interval = interval
        self._wakes: set[Wake] = set()
        self._last: int | None = None
        self._unreachable = False

    @contextlib.asynccontextmanager
    async def subscribed(self, conn: Conn, wake: Wake) -> AsyncIterator[None]:
        self._wakes.add(wake)
        try:
            yield
        finally:
            self._wakes.discard(wake)

    async def run(self) -> None:
        """Poll until cancelled, then drop the connection (as the feed drops
        its own: a replica that stopped answering would not answer a close).
        A replica out of reach is logged once, and polled again until it
        answers."""
        try:
            while True:
                if self._wakes:
                    await self._poll()
                await asyncio.sleep(self._interval)
        finally:
            if self._conn is not None:
                self._conn.terminate()

    async def _poll(self) -> None:
        try:
            if self._conn is None:
                self._conn = await asyncpg.connect(self._dsn)
            head = await self._conn.fetchval(_HEAD)
        except CANNOT_OPEN as error:
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None
            if not self._unreachable:
                log.warning("cannot read the replica's head (followers wait): %s", error)
                self._unreachable = True
            return
        if self._unreachable:
            log.info("the replica answers again")
            self._unreachable = False
        if head != self._last:
            self._last = head
            for wake in list(self._wakes):
                wake(head)
