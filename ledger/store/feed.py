"""The log's new events, read once for every follower of a process.

A follower of ``/v1/events?follow=true`` catches up on its own stream
connection, then takes what the :class:`Feed` hands it and holds no
connection at all. The feed reads, on a connection of its own, the pages of
lines after the last seq it handed out each time the log may have grown
(:mod:`ledger.store.follow`: NOTIFY, or the replica's head), and gives the
same page to every subscriber: one read per new head, however many follow.

A subscriber buffers the pages its follower has not written yet: one page
whatever its size, and more only up to ``max_buffered`` bytes. One that
falls further behind (a client that stops reading) is cut off: its buffer
is dropped and it is told so, so that a slow follower can neither grow the
service's memory nor hold up the others.

A connection that stops answering without closing (its host hung or gone,
the network between cut) neither closes nor notifies: while anyone follows,
the feed asks it to answer after every quiet interval, and it replaces one
that takes longer than :data:`ANSWER_WITHIN` to answer that or a read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg

from .connection import connect
from .follow import Wakeups
from .head import read_head
from .lines import EVENT_PAGE, PAGE
from .retry import CANNOT_OPEN, CONNECTION_LOST

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds the feed's connection has to answer a query before the feed takes
#: it for gone: far longer than a page takes on a database that is up.
ANSWER_WITHIN = 10.0


@dataclass(frozen=True, slots=True)
class Page:
    """The lines of the events ``first`` to ``last``, each ending in a newline."""

    first: int
    last: int
    text: bytes

    def after(self, seq: int) -> bytes:
        """The lines of the events after ``seq`` (one line per event, in order)."""
        if seq < self.first:
            return self.text
        return b"".join(self.text.splitlines(keepends=True)[seq - self.first + 1 :])


@dataclass(eq=False, slots=True)
class Subscription:
    """What the feed has handed one follower and it has not taken yet.

    :attr:`start` is the seq the feed had handed out when it subscribed:
    every page it gets comes after it, so a follower that has read the log
    up to :attr:`start` itself misses nothing and sees nothing twice."""

    start: int
    max_buffered: int
    pages: collections.deque[Page] = field(default_factory=collections.deque)
    buffered: int = 0
    #: Set when the follower fell more than ``max_buffered`` bytes behind.
    cut: bool = False
    #: Set when the service stops: no page comes any more.
    stopped: bool = False
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def _stop(self) -> None:
        self.stopped = True
        self._ready.set()

    def _hand(self, page: Page) -> None:
        if self.cut:
            return
        if self.pages and self.buffered + len(page.text) > self.max_buffered:
            self.cut = True
            self.pages.clear()
            self.buffered = 0
        else:
            self.pages.append(page)
            self.buffered += len(page.text)
        self._ready.set()

    async def next(self, timeout: float) -> Page | None:
        """The next page, or ``None`` after ``timeout`` seconds with none (or
        at once when :attr:`cut` or :attr:`stopped`)."""
        if not self.pages and not self.cut and not self.stopped:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        if not self.pages:
            return None
        page = self.pages.popleft()
        self.buffered -= len(page.text)
        return page


class Feed:
    """Reads each new page of the log once, on a connection to ``dsn``, and
    hands it to every :class:`Subscription`; while there are any, checks
    that the connection answers after every ``quiet`` seconds with nothing
    to read."""

    def __init__(self, dsn: str, wakeups: Wakeups, *, max_buffered: int, quiet: float) -> None:
        self._dsn = dsn
        self._wakeups = wakeups
        self._max_buffered = max_buffered
        self._quiet = quiet
        self._subscriptions: set[Subscription] = set()
        self._woken = asyncio.Event()
        self._stopped = False
        #: The last seq handed out (or, before any, where the feed started).
        self.position = 0
        #: Pages read, since start (one read serves every follower).
        self.reads = 0
        #: Set while pages are read: :attr:`position` moves only with them.
        self._reading = False

    def stop(self) -> None:
        """Wake every subscriber: the service is stopping."""
        self._stopped = True
        for subscription in self._subscriptions:
            subscription._stop()

    @contextlib.contextmanager
    def subscribed(self) -> Iterator[Subscription]:
        """For the block, a subscription to every page after :attr:`position`."""
        subscription = Subscription(self.position, self._max_buffered, stopped=self._stopped)
        self._subscriptions.add(subscription)
        self._woken.set()  # the feed may have been idle: read what came meanwhile
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    async def run(self) -> None:
        """Read and hand out pages until cancelled; a lost connection is
        opened again (logged once per outage) and reading resumes where it was.

        A connection lost while the feed waits wakes it: NOTIFY comes on that
        connection, so a feed still waiting on it would wait for ever while
        the log grows."""
        unreachable = unreadable = False
        while True:
            try:
                conn = await connect(self._dsn, server_settings={"application_name": "ledger-feed"})
            except CANNOT_OPEN as error:
                if not unreachable:
                    log.warning("the event feed cannot reach the database: %s", error)
                unreachable = True
                await asyncio.sleep(1)
                continue
            unreachable = False
            conn.add_termination_listener(self._closed)
            try:
                await self._skip(conn)
                unreadable = False
                async with self._wakeups.subscribed(conn, self._grown):
                    self._woken.set()  # what was appended while it was not listening
                    while True:
                        await self._woken_or_answering(conn)
                        self._woken.clear()
                        if conn.is_closed():
                            raise ConnectionResetError("the connection closed")
                        if self._subscriptions:
                            await self._read(conn)
                        else:
                            await self._skip(conn)
            except CONNECTION_LOST as error:
                log.warning("the event feed lost its connection: %s", error)
            except asyncpg.PostgresError as error:
                # A database that answers but holds no log (a replica not
                # yet migrated): followers wait until it does.
                if not unreadable:
                    log.warning("the event feed cannot read the log: %s", error)
                unreadable = True
                await asyncio.sleep(1)
            finally:
                conn.terminate()

    async def _woken_or_answering(self, conn: asyncpg.Connection) -> None:
        """Until woken; meanwhile, while there are subscribers, ``conn`` must
        answer after every quiet interval (:func:`_answered`)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._quiet if self._subscriptions else None):
                    await self._woken.wait()
                    return
            if self._subscriptions:
                await _answered(conn, conn.execute("SELECT 1"))

    def _closed(self, _conn: object) -> None:
        self._woken.set()

    def _grown(self, head: int | None) -> None:
        """The log grew to ``head``: read it, for the subscribers there are.
        With none, :attr:`position` only moves there, and nothing is read:
        not even the head, when the wake-up tells it (every append's does)."""
        if self._subscriptions or head is None or self._reading:
            self._woken.set()
        elif head > self.position:
            self.position = head

    async def _skip(self, conn: asyncpg.Connection) -> None:
        """With no one to hand pages to, move :attr:`position` to the head,
        unless someone subscribed meanwhile (it starts from the position it
        saw, and must get every page after it)."""
        head = (await _answered(conn, read_head(conn))).seq
        if not self._subscriptions:
            self.position = max(self.position, head)

    async def _read(self, conn: asyncpg.Connection) -> None:
        """Hand out every page after :attr:`position`, one after another."""
        self._reading = True
        try:
            while True:
                after = self.position
                row = await _answered(conn, conn.fetchrow(EVENT_PAGE, after, PAGE))
                assert row is not None  # an aggregate: always one row
                self.reads += 1
                if row["lines"]:
                    page = Page(after + 1, row["last_seq"], row["text"])
                    self.position = page.last
                    for subscription in self._subscriptions:
                        subscription._hand(page)
                if row["lines"] < PAGE:
                    return
        finally:
            self._reading = False


async def _answered(conn: asyncpg.Connection, query: Awaitable[T]) -> T:
    """What ``query`` on ``conn`` returns; if the database takes longer than
    :data:`ANSWER_WITHIN` to answer it, ``conn`` is closed (nothing more is
    asked of it, an UNLISTEN included) and ConnectionResetError raised."""
    try:
        async with asyncio.timeout(ANSWER_WITHIN):
            return await query
    except TimeoutError:
        conn.terminate()
        raise ConnectionResetError(f"the database did not answer in {ANSWER_WITHIN:g} s") from None
