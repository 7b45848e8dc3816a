"""The hash chain checked in several processes, a range of seq each.

Each event stores its hash, so the events ``lo`` to ``hi`` are checked on
their own, from the hash stored last before ``lo``: the check is CPU work
(canonical bytes and SHA-256 of every event) that spreads over cores, while
the caller's connection sums the balances (:mod:`ledger.store.movements`).
Every process
reads in the caller's snapshot (``pg_export_snapshot``), so all of them see
the log the caller sees.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..domain.chain import GENESIS
from ..processes import spawning_with_stop_signals_held, take_stop_signals
from .connection import Conn, connect
from .replay import ChainCheck

#: Logs shorter than this are checked in the caller: starting processes
#: would cost more than it saves.
SPREAD_FROM = 100_000
#: The most events one range holds: a process checks range after range, so
#: that the ranges checked tell the progress.
RANGE_EVENTS = 50_000

_BEFORE = "SELECT hash FROM events WHERE seq < $1 ORDER BY seq DESC LIMIT 1"
#: What pg_export_snapshot returns (it cannot be a parameter of SET).
_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")


@dataclass(frozen=True, slots=True)
class RangeChecked:
    first_bad_seq: int | None
    last_seq: int
    last_hash: bytes
    checked: int
    unreadable: tuple[int, str] | None


def check_range(dsn: str, snapshot: str, lo: int, hi: int) -> RangeChecked:
    """Check events ``lo`` to ``hi`` in ``snapshot``; for a process pool."""
    return asyncio.run(_check_range(dsn, snapshot, lo, hi))


async def _check_range(dsn: str, snapshot: str, lo: int, hi: int) -> RangeChecked:
    assert _SNAPSHOT_ID.match(snapshot), snapshot
    conn = await connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            chain = ChainCheck(previous=await conn.fetchval(_BEFORE, lo) or GENESIS, next_seq=lo)
            await chain.read(conn, lo, hi)
            chain.ends_at(hi)
    finally:
        await conn.close()
    return RangeChecked(chain.first_bad_seq, chain.next_seq - 1, chain.previous, chain.checked, chain.unreadable)


def _deaf_to_stop_signals(caller: int) -> None:
    """A checking process ignores the stop signals: it is ``caller``'s, which
    ends it. A stop sent to the whole process group (Ctrl-C at a terminal,
    systemd's default stop) is the caller's to act on; the service finishes
    the reconciliation in flight. If the caller dies without ending it (a
    stop it does not handle kills it), it ends itself within a second."""
    take_stop_signals(signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(caller,), name="orphan-watch", daemon=True).start()


def _exit_when_orphaned(caller: int) -> None:
    """Exit once ``caller`` is no longer this process's parent: it died, and
    nothing would ever hand this process more work or end it."""
    while os.getppid() == caller:
        time.sleep(1)
    os._exit(1)


def _ranges(head: int, parts: int) -> list[tuple[int, int]]:
    bounds = [1 + head * i // parts for i in range(parts + 1)]
    return [(lo, hi - 1) for lo, hi in itertools.pairwise(bounds) if hi > lo]


async def export_snapshot(conn: Conn) -> str:
    """The snapshot of ``conn``'s transaction, for other sessions to read in."""
    snapshot: str = await conn.fetchval("SELECT pg_export_snapshot()")
    return snapshot


class ChainWorkers:
    """Processes that check the chain of the log on ``dsn``, a range each
    (one per core unless told), for logs of ``spread_from`` events and more."""

    def __init__(self, dsn: str, processes: int | None = None, *, spread_from: int = SPREAD_FROM) -> None:
        self.dsn = dsn
        self.processes = processes or os.cpu_count() or 1
        self.spread_from = spread_from

    def wanted(self, head: int) -> bool:
        """Whether a log of ``head`` events is worth spreading."""
        return self.processes > 1 and head >= self.spread_from

    async def check(self, snapshot: str, head: int, *, every: Callable[[int], None] | None = None) -> ChainCheck:
        """The chain of events 1 to ``head`` in ``snapshot`` (see
        :func:`export_snapshot`; its transaction must stay open until this
        returns), checked in ranges of at most :data:`RANGE_EVENTS`, as many
        at a time as there are processes: the first bad seq of all, and
        where the last ends (for :meth:`~ledger.store.replay.ChainCheck.finish`).
        ``every(checked)`` is told the events checked so far as each range ends."""
        loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        ranges = _ranges(head, max(self.processes, -(-head // RANGE_EVENTS)))
        pool = concurrent.futures.ProcessPoolExecutor(
            min(self.processes, len(ranges)),
            mp_context=context,
            initializer=_deaf_to_stop_signals,
            initargs=(os.getpid(),),
        )
        try:
            with spawning_with_stop_signals_held():  # the processes start in the submits
                pending = [loop.run_in_executor(pool, check_range, self.dsn, snapshot, lo, hi) for lo, hi in ranges]
            done = 0
            for next_done in asyncio.as_completed(pending):
                done += (await next_done).checked
                if every is not None:
                    every(done)
            checked = [future.result() for future in pending]
        finally:
            # Given up (the caller cancelled): the ranges not begun are
            # dropped, those begun end first.
            pool.shutdown(cancel_futures=True)
        bad = [c.first_bad_seq for c in checked if c.first_bad_seq is not None]
        unreadable = min((c.unreadable for c in checked if c.unreadable is not None), default=None)
        last = checked[-1]
        return ChainCheck(last.last_hash, last.last_seq + 1, min(bad, default=None), done, unreadable=unreadable)
