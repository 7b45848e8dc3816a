"""The event log as NDJSON, each line built by PostgreSQL and sent by
``COPY (…) TO STDOUT``: constant memory in the service, whatever the log's length.

Each line is the object a ``/v1/events`` line is (the same fields with the
same values: ``seq``, ``type``, ``stream_id``, ``data``, ``metadata``,
``recorded_at`` in the service's format, ``hash`` in hex), in seq order. COPY
runs in CSV format with a quote and a delimiter that JSON text never holds
raw (it escapes every control character), so each line goes out as
PostgreSQL wrote it, unescaped.
"""

from __future__ import annotations

from typing import Any

from .connection import Conn

#: How COPY writes (and an import reads) the lines: CSV quoted and delimited
#: by control characters that no line can hold, so that each goes as it is.
QUOTE, DELIMITER = "\x01", "\x02"


def _lines(after_seq: int) -> str:
    """The query of the lines after ``after_seq`` (COPY takes no parameters:
    an ``int``, written into the text)."""
    assert isinstance(after_seq, int) and after_seq >= 0
    return f"""
        SELECT json_build_object(
            'seq', seq, 'type', type, 'stream_id', stream_id, 'data', data, 'metadata', metadata,
            'recorded_at', to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'hash', encode(hash, 'hex')
        )
        FROM events WHERE seq > {after_seq} ORDER BY seq
    """


async def export(conn: Conn, output: Any, *, after_seq: int = 0) -> int:
    """Write the events after ``after_seq`` to ``output`` (a path, a binary
    file, or an async callable taking bytes), one NDJSON line each; return
    how many. Read in one snapshot, so the lines are a gapless run of the log."""
    status: str = await conn.copy_from_query(
        _lines(after_seq), output=output, format="csv", quote=QUOTE, delimiter=DELIMITER
    )
    return int(status.split()[-1])
