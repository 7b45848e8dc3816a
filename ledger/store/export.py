"""The event log as NDJSON: the ``/v1/events`` lines (:mod:`.lines`, built
by PostgreSQL and sent by ``COPY (…) TO STDOUT``), so constant memory in the
service, whatever the log's length."""

from __future__ import annotations

from .connection import Conn
from .lines import Output, copy_event_lines


async def export(conn: Conn, output: Output, *, after_seq: int = 0) -> int:
    """Write the events after ``after_seq`` to ``output`` (a path, a binary
    file, or an async callable taking bytes), one NDJSON line each; return
    how many. Read in one snapshot, so the lines are a gapless run of the log."""
    return await copy_event_lines(conn, output, after_seq=after_seq)
