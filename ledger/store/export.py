"""The event log as NDJSON: the ``/v1/events`` lines, built by PostgreSQL a
page at a time (:mod:`.lines`), so constant memory whatever the log's length."""

from __future__ import annotations

import contextlib
from typing import IO

from .connection import Conn
from .lines import send_event_lines


async def export(conn: Conn, output: str | IO[bytes], *, after_seq: int = 0) -> int:
    """Write the events after ``after_seq`` to ``output`` (a path, or a
    binary file, written from the event loop), one NDJSON line each; return
    how many. Read in one snapshot, so the lines are a gapless run of the log."""
    with open(output, "wb") if isinstance(output, str) else contextlib.nullcontext(output) as file:

        async def send(lines: bytes) -> None:
            file.write(lines)

        return (await send_event_lines(conn, send, after_seq=after_seq)).lines
