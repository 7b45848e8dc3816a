"""Group commit: many callers' writes appended as one transaction.

Every write (transfers, batches, posts, voids, closes, expiries) is put on a
queue; one task per process takes everything waiting, up to
:data:`MAX_COMMANDS` commands, and hands it to the writer as one append. Each
caller awaits the outcomes of its own request. Nothing waits on a timer: a
lone request on an idle service is appended at once, and under load the next
batch forms while the previous append is in flight.

The next batch is decided while the append before it is in flight, after
what that append leaves, and sealed ahead once full (its states and
transitions are :mod:`ledger.store.write_path`'s); with nothing in flight,
against the log as it stands. A batch is written as decided only if the head
is still the one it was decided after, and decided again under the lock
otherwise. The ledger carried from batch to batch is kept while the queue
runs dry, and carried on after only if the head of the log is still the one
the last append left (see :meth:`Coalescer._begin`); past :data:`CHAIN_LIMIT`
transfers or accounts it is cut down to what the append in flight changed
(the accounts all stay while they are within it). docs/architecture.md,
"The write path", walks through it.

Decisions stay per command and in queue order (the append decides each
request's commands in order, atomic requests all-or-nothing), so a refused
command never fails its neighbours. An append that fails for good (retries
exhausted, database gone) fails every request in it with the same error; the
next append starts clean. An append the database does not answer within the
retry policy's time limit (:class:`~ledger.store.retry.NoAnswer`) fails its
requests as perhaps recorded, and every request waiting behind it as not
sent: each would wait as long again, on the same database. So does a read
for a batch begun with nothing in flight (the head of the log, or what the
batch's decisions need) that is not answered within the limit: the append
would ask the same database next. A read for a batch decided ahead, so left
unanswered, has it decided under the lock once the append in flight ends.

The queue is bounded by commands: when it is full a new write is refused at
once with :class:`~ledger.store.retry.Unavailable`, so memory does not grow
with load. :meth:`Coalescer.close` refuses new writes and drains the queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .. import metrics
from ..domain.ledger import Outcome
from .retry import NoAnswer, Unavailable
from .write_path import AppendRequest, Committed, Copy, Decided, Pending, Sealed
from .writer import Writer

log = logging.getLogger(__name__)

#: Commands in one append at most (the batch endpoint's limit).
MAX_COMMANDS = 8190

#: Transfers, and accounts, a ledger carried from append to append may hold
#: before it is cut down to what the last append changed, the accounts only
#: if they are past it too (bounds memory under endless load).
CHAIN_LIMIT = 50_000


#: What the requests of an append the database did not answer are told,
#: after what was not answered.
_MAY_BE_RECORDED = "the write may have been recorded: retry it with the same id to learn its outcome"
#: What the requests not yet sent when the database did not answer are told.
_NOT_SENT = "this write was not sent: retry it with the same id"


def _not_sent(error: NoAnswer) -> Unavailable:
    return Unavailable(f"{error}; {_NOT_SENT}")


@dataclass(slots=True)
class _Waiting:
    request: AppendRequest
    result: asyncio.Future[list[Outcome]]


@dataclass(slots=True)
class _Next:
    """The next append, gathering requests from the queue."""

    waiting: list[_Waiting]
    batch: Pending | Decided | Sealed

    @property
    def commands(self) -> int:
        return sum(len(w.request.commands) for w in self.waiting)


@dataclass(frozen=True, slots=True)
class _InFlight:
    """An append with the writer."""

    waiting: list[_Waiting]
    batch: Sealed | Pending
    task: asyncio.Future[Committed]


def _following(upcoming: _Next, previous: _InFlight, committed: Committed | None) -> _Next:
    """``upcoming``, decided after ``previous`` as it was sealed, now that
    ``previous`` has ended: as it is if ``previous`` was recorded as sealed;
    else (it was decided again, or failed) pending, for what it was decided
    after never became the head, and writing it would only find it stale."""
    if (committed is not None and committed.sealed is previous.batch) or isinstance(upcoming.batch, Pending):
        return upcoming
    return _Next(upcoming.waiting, Pending(list(upcoming.batch.requests)))


class Coalescer:
    """The write queue of a process, in front of its :class:`Writer`.

    ``max_queued`` commands may wait at once; an append carries at most
    ``max_commands``; a ledger carried from append to append is cut down past
    ``chain_limit`` accounts or ``chain_limit`` transfers.
    """

    def __init__(
        self,
        writer: Writer,
        *,
        max_queued: int,
        max_commands: int = MAX_COMMANDS,
        chain_limit: int = CHAIN_LIMIT,
    ) -> None:
        self._writer = writer
        #: Commands allowed to wait at once; more are refused.
        self.max_queued = max_queued
        self._max_commands = max_commands
        self._chain_limit = chain_limit
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._queued = 0
        self._wake = asyncio.Event()
        #: Set while no write is waiting or in flight.
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        #: Set if this task failed: every write is refused with it.
        self._failure: Unavailable | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Appends made and requests they carried, since start (for health and tests).
        self.appends = 0
        self.requests = 0
        #: Batches begun while the append before them was in flight, since start.
        self.decided_ahead = 0
        #: Of those, batches full, and sealed while the append before them was in flight.
        self.sealed_ahead = 0

    @property
    def queued(self) -> int:
        """Commands waiting for an append to start recording them (queued,
        or decided ahead of it)."""
        return self._queued

    async def idle(self, longest: float) -> None:
        """Return once no write is waiting or in flight, or after ``longest``
        seconds: what a bulk read waits for between pages, so that on a busy
        service the writes come first and the read still goes on."""
        if not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), longest)

    @property
    def failed(self) -> bool:
        """The queue's task failed: writes are refused until a restart."""
        return self._failure is not None

    def start(self) -> None:
        """Start the queue's task. :meth:`submit` must be called on the loop
        this runs on: it makes its futures there."""
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="ledger-coalescer")

    async def submit(self, requests: Sequence[AppendRequest]) -> list[list[Outcome]]:
        """Queue ``requests`` and wait for their outcomes, one list each.

        Raises :class:`Unavailable` at once when the queue is full or the
        service is stopping, and when the append carrying them fails for good.
        An empty queue takes requests of any size: a batch larger than
        :attr:`max_queued` is refused until it finds the queue empty, rather
        than for ever.
        """
        size = sum(len(r.commands) for r in requests)
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise Unavailable("the service is stopping")
        if self._queued and self._queued + size > self.max_queued:
            raise Unavailable(f"{self._queued} commands are waiting to be written; try again shortly")
        assert self._loop is not None, "start() first"
        waiting = [_Waiting(r, self._loop.create_future()) for r in requests]
        self._queue.extend(waiting)
        self._queued += size
        metrics.WRITE_QUEUE_DEPTH.set(self._queued)
        self._idle.clear()
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
        in_flight: _InFlight | None = None
        upcoming: _Next | None = None  # after ``in_flight``, if any; waits for it
        last: Committed | None = None  # while busy, the last append: what ``upcoming`` may follow
        rested: Decided | None = None  # when the queue ran dry, what would follow the last append
        try:
            while True:
                if in_flight is not None and in_flight.task.done():
                    last = self._answer(in_flight)
                    if isinstance(error := in_flight.task.exception(), NoAnswer):
                        self._refuse_waiting(upcoming, _not_sent(error))
                        upcoming = None
                    if upcoming is not None:
                        in_flight, upcoming = self._start(_following(upcoming, in_flight, last)), None
                    else:
                        in_flight = None
                    continue
                if not self._queue:
                    if in_flight is None:
                        if last is not None:
                            # Idle: what comes next may follow it only if
                            # nothing is recorded meanwhile (see _begin).
                            rested, last = Decided.after(last.sealed, limit=self._chain_limit), None
                        self._idle.set()
                        if self._closing:
                            return
                    await self._wait()
                    continue
                if upcoming is None:
                    try:
                        upcoming, rested = await self._begin(in_flight, last, rested), None
                    except NoAnswer as error:
                        self._refuse_waiting(None, _not_sent(error))
                        continue
                    if upcoming is None:  # what the append in flight leaves is known once it commits
                        await self._wait()
                        continue
                room = self._max_commands - upcoming.commands
                if len(self._queue[0].request.commands) > room:  # upcoming is full
                    if in_flight is not None:
                        await self._seal_ahead(upcoming, in_flight)
                    await self._wait()
                    continue
                waiting = self._take(room)
                upcoming.waiting.extend(waiting)
                try:
                    upcoming.batch = await self._decide(
                        upcoming.batch, [w.request for w in waiting], alone=in_flight is None
                    )
                except NoAnswer as error:
                    # What it decided moved on the ledger of ``last``, if it
                    # followed it: nothing follows that from here.
                    self._refuse_waiting(upcoming, _not_sent(error))
                    upcoming = last = None
                    continue
                if in_flight is None:
                    in_flight, upcoming = self._start(upcoming), None
                elif upcoming.commands == self._max_commands:
                    await self._seal_ahead(upcoming, in_flight)
        except Exception:
            # A fault of this task's own: refuse writes from now on and answer
            # every caller it holds, rather than leave them waiting for ever.
            log.critical("the write queue failed; writes are refused from now on", exc_info=True)
            self._closing = True
            self._failure = Unavailable("the service cannot write; see its log")
            self._refuse_waiting(upcoming, self._failure)
            self._idle.set()
            if in_flight is not None:
                await asyncio.wait((in_flight.task,))
                self._answer(in_flight)

    async def _begin(self, in_flight: _InFlight | None, last: Committed | None, rested: Decided | None) -> _Next | None:
        """The next append, nothing taken into it yet: decided after the append
        in flight if that one was sealed, else after the last one; with none
        of either, against the log as it stands (or, if it cannot be read,
        pending; :class:`~ledger.store.retry.NoAnswer` if it is not answered
        in time), or ``rested`` (nothing decided yet, after the append the
        queue ran dry after) if the head is still its basis. None while the
        append in flight is pending: what it leaves is known only once it
        commits.

        ``last`` must be a committed append after which nothing has been
        decided (a batch decided after one moves its ledger on), and
        ``rested`` made after one such."""
        if in_flight is not None:
            if not isinstance(in_flight.batch, Sealed):
                return None
            self.decided_ahead += 1
            return _Next([], Decided.after(in_flight.batch, limit=self._chain_limit))
        if last is not None:  # and everything before it is recorded
            return _Next([], Decided.after(last.sealed, limit=self._chain_limit))
        try:
            decided = await self._writer.at_head()
        except NoAnswer:
            raise
        except Exception:
            log.warning("reading the head of the log failed; deciding under the lock", exc_info=True)
            return _Next([], Pending())
        if rested is not None and decided.basis == rested.basis:
            # Nothing recorded, no projection rewritten since (the epoch is
            # in the head): what its ledger holds is still so.
            return _Next([], rested)
        return _Next([], decided)

    async def _decide(
        self, batch: Pending | Decided | Sealed, requests: list[AppendRequest], *, alone: bool
    ) -> Pending | Decided:
        """``batch`` with ``requests`` taken into it: decided outside the lock
        if ``batch`` is decided; pending if it is, or if deciding fails, but
        for :class:`~ledger.store.retry.NoAnswer` when the batch is ``alone``
        (no append in flight), which is raised."""
        match batch:
            case Decided():
                decided = len(batch.requests)
                try:
                    await self._writer.decide(batch, requests)
                    return batch
                except Exception as error:
                    if alone and isinstance(error, NoAnswer):
                        raise
                    log.warning("deciding outside the lock failed; deciding under it", exc_info=True)
                    return Pending([*batch.requests[:decided], *requests])
            case Pending():
                batch.requests.extend(requests)
                return batch
            case Sealed():
                raise AssertionError("a sealed batch takes no more requests")

    async def _wait(self) -> None:
        await self._wake.wait()
        self._wake.clear()

    async def _seal_ahead(self, upcoming: _Next, in_flight: _InFlight) -> None:
        """Seal ``upcoming``, full, and make its COPY text while ``in_flight``
        is, a chunk at a time, until ``in_flight`` ends: work that would
        otherwise be done between the two appends, or while ``upcoming`` is
        recorded, and keep the database waiting."""
        if not isinstance(upcoming.batch, Decided):
            return  # pending, or sealed already
        upcoming.batch = sealed = self._seal(upcoming.batch)
        if not isinstance(sealed, Sealed):
            return
        self.sealed_ahead += 1
        if isinstance(sealed.rows, Copy):
            for _ in sealed.rows.making():
                if in_flight.task.done():
                    return  # what is left is made as it is sent
                await asyncio.sleep(0)

    def _seal(self, decided: Decided) -> Sealed | Pending:
        """``decided``, sealed; pending (to be decided under the lock) if
        sealing fails."""
        try:
            return self._writer.seal(decided)
        except Exception:
            log.exception("sealing a batch failed; deciding it under the lock")
            return Pending(decided.requests)

    def _start(self, upcoming: _Next) -> _InFlight:
        """Hand ``upcoming`` to the writer: sealed now, if decided, before
        anything is decided after it."""
        batch = self._seal(upcoming.batch) if isinstance(upcoming.batch, Decided) else upcoming.batch
        assert isinstance(batch, (Sealed, Pending))
        self.appends += 1
        self.requests += len(upcoming.waiting)
        self._queued -= upcoming.commands
        metrics.WRITE_QUEUE_DEPTH.set(self._queued)
        task = asyncio.ensure_future(self._writer.append(batch))
        task.add_done_callback(lambda _: self._wake.set())
        return _InFlight(upcoming.waiting, batch, task)

    def _answer(self, in_flight: _InFlight) -> Committed | None:
        """Answer the requests of a finished append; what it committed, if it did."""
        try:
            committed = in_flight.task.result()
        except Exception as error:  # the callers answer for it (503, or 500 if unexpected)
            if isinstance(error, NoAnswer):
                log.warning("an append of %d requests was given up: %s", len(in_flight.waiting), error)
                error = Unavailable(f"{error}; {_MAY_BE_RECORDED}")
            elif not isinstance(error, Unavailable):
                log.exception("an append of %d requests failed", len(in_flight.waiting))
            for waiting in in_flight.waiting:
                if not waiting.result.done():
                    waiting.result.set_exception(error)
            return None
        for waiting, outcomes in zip(in_flight.waiting, committed.results, strict=True):
            if not waiting.result.done():
                waiting.result.set_result(outcomes)
        return committed

    def _refuse_waiting(self, upcoming: _Next | None, error: Unavailable) -> None:
        """Fail with ``error`` every request not handed to the writer yet:
        ``upcoming``'s and the queue's."""
        stranded = [*(upcoming.waiting if upcoming else ()), *self._queue]
        self._queue.clear()
        self._queued = 0
        metrics.WRITE_QUEUE_DEPTH.set(0)
        for waiting in stranded:
            if not waiting.result.done():
                waiting.result.set_exception(error)

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
