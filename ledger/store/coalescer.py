"""Group commit: many callers' writes appended as one transaction.

Every write (transfers, batches, posts, voids, closes, expiries) is put on a
queue; one task per process takes everything waiting, up to
:data:`MAX_COMMANDS` commands, and hands it to the writer as one append. Each
caller awaits the outcomes of its own request. Nothing waits on a timer: a
lone request on an idle service is appended at once, and under load the next
batch forms while the previous append is in flight.

Every batch is decided outside the lock: the next one while the previous
append is in flight, against the ledger as that append leaves it (plus what
else it touches, read on the writer's reading connection), so that deciding
one batch and recording the one before overlap; with nothing in flight,
against the log as it stands. It is written as decided only if the head is
still the one it was decided after, and decided again under the lock
otherwise (see :mod:`ledger.store.append`). The ledger carried from batch to
batch is dropped whenever the queue runs dry, and past :data:`CHAIN_LIMIT`
rows it is cut down to what the append in flight changed. A batch decided
ahead that is full is sealed, and its COPY text made, while the append
before it is in flight, so that its own append has only to send it.

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

from .. import metrics
from ..domain.ledger import Outcome
from .append import AppendRequest, Batch
from .retry import Unavailable
from .writer import Writer

log = logging.getLogger(__name__)

#: Commands in one append at most (the batch endpoint's limit).
MAX_COMMANDS = 8190


@dataclass(slots=True)
class _Waiting:
    request: AppendRequest
    result: asyncio.Future[list[Outcome]]


#: Accounts and transfers a ledger carried from append to append may hold
#: before it is cut down to what the last append changed (bounds memory under
#: endless load).
CHAIN_LIMIT = 50_000


@dataclass(slots=True)
class _Append:
    """Requests appended together."""

    waiting: list[_Waiting]
    #: As decided outside the lock; None: to be decided under it.
    batch: Batch | None
    #: Decided while the append before it was being recorded.
    after_another: bool = False
    #: Sealed ahead of its start (see :meth:`Coalescer._prepare`).
    prepared: bool = False
    task: asyncio.Future[Batch] | None = None

    @property
    def commands(self) -> int:
        return sum(len(w.request.commands) for w in self.waiting)


class Coalescer:
    def __init__(self, writer: Writer, *, max_queued: int) -> None:
        self._writer = writer
        #: Commands allowed to wait at once; more are refused.
        self.max_queued = max_queued
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._closing = False
        #: Set if this task failed: every write is refused with it.
        self._failure: Unavailable | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Appends made and requests they carried, since start (for health and tests).
        self.appends = 0
        self.requests = 0
        #: Appends decided while the one before was being recorded, since start.
        self.decided_ahead = 0
        #: Of those, appends full, and sealed while the one before was being recorded.
        self.sealed_ahead = 0

    @property
    def queued(self) -> int:
        """Commands waiting for an append to start recording them (queued,
        or decided ahead of it)."""
        return self._queued

    @property
    def failed(self) -> bool:
        """The queue's task failed: writes are refused until a restart."""
        return self._failure is not None

    def start(self) -> None:
        # Kept: asking for the running loop is a system call per write on Python 3.11.
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="ledger-coalescer")

    async def append(self, requests: Sequence[AppendRequest]) -> list[list[Outcome]]:
        """Queue ``requests`` and wait for their outcomes, one list each.

        Raises :class:`Unavailable` at once when the queue is full or the
        service is stopping, and when the append carrying them fails for good.
        """
        size = sum(len(r.commands) for r in requests)
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise Unavailable("the service is stopping")
        if self._queued + size > self.max_queued:
            raise Unavailable(f"{self._queued} commands are waiting to be written; try again shortly")
        assert self._loop is not None, "start() first"
        waiting = [_Waiting(r, self._loop.create_future()) for r in requests]
        self._queue.extend(waiting)
        self._queued += size
        metrics.WRITE_QUEUE_DEPTH.set(self._queued)
        self._wake.set()
        if len(waiting) == 1:  # most writes: no gathering future needed
            return [await waiting[0].result]
        return list(await asyncio.gather(*(w.result for w in waiting)))

    async def close(self) -> None:
        """Refuse new writes, append everything queued, stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        recording: _Append | None = None  # with the writer
        ahead: _Append | None = None  # being decided (after ``recording``, if any); waits for it
        last: Batch | None = None  # recorded last, while busy: what ``ahead`` may start from
        try:
            while True:
                if recording is not None and recording.task is not None and recording.task.done():
                    last = self._answer(recording)
                    recording = None
                    if ahead is not None:
                        recording, ahead = self._start(ahead), None
                    continue
                if not self._queue:
                    if recording is None:
                        last = None  # idle: the next append reads everything afresh
                        if self._closing:
                            return
                    await self._wait()
                    continue
                if ahead is None:
                    base = last if recording is None else recording.batch
                    if base is not None:  # and everything before it is recorded
                        ahead = _Append([], Batch.after(base, limit=CHAIN_LIMIT), after_another=recording is not None)
                    elif recording is None:
                        ahead = _Append([], await self._fresh())
                    else:  # what the append in flight leaves is known once it is recorded
                        await self._wait()
                        continue
                room = MAX_COMMANDS - ahead.commands
                if len(self._queue[0].request.commands) > room:
                    # ahead is full: for the append before it
                    if recording is not None:
                        await self._prepare(ahead, recording)
                    await self._wait()
                    continue
                waiting = self._take(room)
                ahead.waiting.extend(waiting)
                if ahead.batch is not None:
                    try:
                        await self._writer.decide(ahead.batch, [w.request for w in waiting])
                    except Exception:
                        log.warning("deciding outside the lock failed; deciding under it", exc_info=True)
                        ahead.batch = None
                if recording is None:
                    recording, ahead = self._start(ahead), None
                elif ahead.commands == MAX_COMMANDS:
                    await self._prepare(ahead, recording)
        except Exception:
            # A fault of this task's own: refuse writes from now on and answer
            # every caller it holds, rather than leave them waiting for ever.
            log.critical("the write queue failed; writes are refused from now on", exc_info=True)
            self._closing = True
            self._failure = failure = Unavailable("the service cannot write; see its log")
            stranded = [*(ahead.waiting if ahead else ()), *self._queue]
            self._queue.clear()
            self._queued = 0
            metrics.WRITE_QUEUE_DEPTH.set(0)
            for waiting in stranded:
                if not waiting.result.done():
                    waiting.result.set_exception(failure)
            if recording is not None and recording.task is not None:
                await asyncio.wait((recording.task,))
                self._answer(recording)

    async def _fresh(self) -> Batch | None:
        """A batch to decide against the log as it stands; None (decided
        under the lock) if the log cannot be read."""
        try:
            return await self._writer.fresh()
        except Exception:
            log.warning("reading the head of the log failed; deciding under the lock", exc_info=True)
            return None

    async def _wait(self) -> None:
        await self._wake.wait()
        self._wake.clear()

    async def _prepare(self, append: _Append, before: _Append) -> None:
        """Seal ``append``, full, and make its COPY text while the append
        ``before`` it is in flight, a chunk at a time, until that one ends:
        work that would otherwise be done between the two appends, or while
        ``append`` is recorded, and keep the database waiting."""
        if append.batch is None or append.prepared:
            return
        append.prepared = True
        if not self._seal(append):
            return
        self.sealed_ahead += 1
        assert before.task is not None
        for _ in append.batch.making_copy_text():
            if before.task.done():
                return  # what is left is made as it is sent
            await asyncio.sleep(0)

    def _seal(self, append: _Append) -> bool:
        """Seal ``append``'s batch (idempotent); if that fails, it is decided
        under the lock instead. Say whether it is sealed."""
        assert append.batch is not None
        try:
            append.batch.seal()
        except Exception:
            log.exception("sealing a batch failed; deciding it under the lock")
            append.batch = None
            return False
        return True

    def _start(self, append: _Append) -> _Append:
        """Start recording ``append``: as decided outside the lock, if it was
        and the head is still what it was decided after; else decided under
        the lock."""
        if append.batch is not None:
            self._seal(append)  # now, before anything is decided after it
        self.appends += 1
        self.requests += len(append.waiting)
        self._queued -= append.commands
        metrics.WRITE_QUEUE_DEPTH.set(self._queued)
        self.decided_ahead += append.batch is not None and append.after_another
        requests = [w.request for w in append.waiting]
        append.task = asyncio.ensure_future(self._writer.record(requests, append.batch))
        append.task.add_done_callback(lambda _: self._wake.set())
        return append

    def _answer(self, append: _Append) -> Batch | None:
        """Answer the requests of a finished append; the batch it recorded, if it did."""
        assert append.task is not None
        try:
            batch = append.task.result()
        except Exception as error:  # the callers answer for it (503, or 500 if unexpected)
            if not isinstance(error, Unavailable):
                log.exception("an append of %d requests failed", len(append.waiting))
            for waiting in append.waiting:
                if not waiting.result.done():
                    waiting.result.set_exception(error)
            return None
        for waiting, outcomes in zip(append.waiting, batch.results, strict=True):
            if not waiting.result.done():
                waiting.result.set_result(outcomes)
        return batch

    def _take(self, room: int) -> list[_Waiting]:
        """Everything waiting, in order, up to ``room`` commands (a single
        request is never split; the first is taken whatever its size)."""
        taken: list[_Waiting] = []
        commands = 0
        while self._queue:
            size = len(self._queue[0].request.commands)
            if taken and commands + size > room:
                break
            taken.append(self._queue.popleft())
            commands += size
        return taken
