"""The streams a process is serving, as application state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from .. import metrics


class OpenStreams:
    """How many streams are running (shown by ``/health/ready``), and a way
    to wait until none is."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def open(self, route: str) -> Iterator[None]:
        """One stream of ``route`` (its template) runs for the block."""
        gauge = metrics.OPEN_STREAMS.labels(route)
        self.count += 1
        gauge.inc()
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            gauge.dec()
            if not self.count:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()
