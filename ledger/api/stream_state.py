"""The streams a process is serving, as application state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence

from .. import metrics

log = logging.getLogger(__name__)


class OpenStreams:
    """How many streams are running (shown by ``/health/ready``), a way to
    wait until none is, and, when the service stops, the end of those that
    run too long."""

    def __init__(self, routes: Sequence[str] = ()) -> None:
        """``routes``: the templates of the routes that stream, each counted
        from 0 at once, so that a scrape shows them before any stream opens."""
        for route in routes:
            metrics.OPEN_STREAMS.labels(route)
        self.count = 0
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        #: Past the stop's deadline: a stream that begins now is refused, or
        #: cut as it opens.
        self.past_deadline = False

    @contextlib.contextmanager
    def open(self, route: str) -> Iterator[None]:
        """One stream of ``route`` (its template) runs for the block, in the
        current task: the task :meth:`cut_after` cancels."""
        gauge = metrics.OPEN_STREAMS.labels(route)
        task = asyncio.current_task()
        assert task is not None, "a stream runs in its request's task"
        self.count += 1
        self._tasks.add(task)
        gauge.inc()
        self._idle.clear()
        if self.past_deadline:
            log.warning("cutting a stream that began after the stop's LEDGER_SHUTDOWN_TIMEOUT")
            task.cancel()
        try:
            yield
        finally:
            self.count -= 1
            self._tasks.discard(task)
            gauge.dec()
            if not self.count:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def cut_after(self, seconds: float) -> None:
        """Cancel the streams running ``seconds`` from now, and any that
        begins later: the service is stopping, and gives them that long to
        end. A cancelled stream drops its connection, so that its client
        sees it truncated."""
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + seconds, self._cut_all)

    def _cut_all(self) -> None:
        self.past_deadline = True
        if self._tasks:
            log.warning("cutting %d stream(s) still running at the stop's LEDGER_SHUTDOWN_TIMEOUT", len(self._tasks))
        for task in self._tasks:
            task.cancel()
