"""Group commit: many callers' writes appended as one transaction.

Every write (transfers, batches, posts, voids, closes, expiries) is put on a
queue; one task per process takes everything waiting, up to
:data:`MAX_COMMANDS` commands, and hands it to the writer as one append. Each
caller awaits the outcomes of its own request. Nothing waits on a timer: a
lone request on an idle service is appended at once, and under load the next
batch forms while the previous append is in flight.

Decisions stay per command and in queue order (the append decides each
request's commands in order, atomic requests all-or-nothing), so a refused
command never fails its neighbours. An append that fails for good (retries
exhausted, database gone) fails every request in it with the same error; the
next append starts clean.

The queue is bounded by commands: when it is full a new write is refused at
once with :class:`~ledger.store.retry.Unavailable`, so memory does not grow
with load. :meth:`Coalescer.close` refuses new writes and drains the queue.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ..domain.ledger import Outcome
from .append import AppendRequest
from .retry import Unavailable
from .writer import Writer

log = logging.getLogger(__name__)

#: Commands in one append at most (the batch endpoint's limit).
MAX_COMMANDS = 8190


@dataclass(slots=True)
class _Waiting:
    request: AppendRequest
    result: asyncio.Future[list[Outcome]]


class Coalescer:
    def __init__(self, writer: Writer, *, max_queued: int) -> None:
        self._writer = writer
        #: Commands allowed to wait at once; more are refused.
        self.max_queued = max_queued
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        #: Appends made and requests they carried, since start (for health and tests).
        self.appends = 0
        self.requests = 0

    @property
    def queued(self) -> int:
        """Commands waiting for an append."""
        return self._queued

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-coalescer")

    async def append(self, requests: Sequence[AppendRequest]) -> list[list[Outcome]]:
        """Queue ``requests`` and wait for their outcomes, one list each.

        Raises :class:`Unavailable` at once when the queue is full or the
        service is stopping, and when the append carrying them fails for good.
        """
        size = sum(len(r.commands) for r in requests)
        if self._closing:
            raise Unavailable("the service is stopping")
        if self._queued + size > self.max_queued:
            raise Unavailable(f"{self._queued} commands are waiting to be written; try again shortly")
        loop = asyncio.get_running_loop()
        waiting = [_Waiting(r, loop.create_future()) for r in requests]
        self._queue.extend(waiting)
        self._queued += size
        self._wake.set()
        return list(await asyncio.gather(*(w.result for w in waiting)))

    async def close(self) -> None:
        """Refuse new writes, append everything queued, stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self._append(self._take())
            if self._closing:
                return

    def _take(self) -> list[_Waiting]:
        """Everything waiting, in order, up to :data:`MAX_COMMANDS` commands
        (a single request is never split)."""
        batch: list[_Waiting] = []
        commands = 0
        while self._queue:
            size = len(self._queue[0].request.commands)
            if batch and commands + size > MAX_COMMANDS:
                break
            batch.append(self._queue.popleft())
            commands += size
        self._queued -= commands
        return batch

    async def _append(self, batch: list[_Waiting]) -> None:
        self.appends += 1
        self.requests += len(batch)
        try:
            results = await self._writer.append([w.request for w in batch])
        except Exception as error:  # the callers answer for it (503, or 500 if unexpected)
            if not isinstance(error, Unavailable):
                log.exception("an append of %d requests failed", len(batch))
            for waiting in batch:
                if not waiting.result.done():
                    waiting.result.set_exception(error)
            return
        for waiting, outcomes in zip(batch, results, strict=True):
            if not waiting.result.done():
                waiting.result.set_result(outcomes)
