"""``ledger import``: an export loaded into a ledger whose head it continues.

In one SERIALIZABLE transaction holding the append lock: the file's lines
are COPYed into a staging table, each must be a JSON object whose ``seq``
continues the log (the first just after the head, then one by one), the
events go into the log as the lines give them (seq, recorded_at and hash
kept), the head moves to the last, and the projections are rebuilt from the
whole log by the code every rebuild uses (:func:`~ledger.store.rebuild.rebuild_locked`),
which checks the hash chain as it goes. Whatever is wrong, the transaction
rolls back and the ledger is as it was: nothing of the file is kept.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from ..domain.events import EVENT_TYPES
from .head import LOCK, read_head
from .rebuild import Rebuilt, rebuild_locked
from .replay import ChainBroken

#: How COPY reads an export: each line one CSV column, quoted and delimited
#: by control characters that JSON text never holds raw, so taken as it is.
QUOTE, DELIMITER = "\x01", "\x02"

_STAGE = """
    CREATE TEMP TABLE import_lines (line bigint GENERATED ALWAYS AS IDENTITY, text text NOT NULL)
    ON COMMIT DROP
"""
_NOT_AN_OBJECT = """
    SELECT min(line) FROM import_lines
    WHERE NOT pg_input_is_valid(text, 'jsonb') OR jsonb_typeof(text::jsonb) <> 'object'
"""
#: The first line that is not an event as an export writes it.
_NOT_AN_EVENT = """
    SELECT min(line) FROM (SELECT line, text::jsonb AS j FROM import_lines) AS l
    WHERE NOT (
        j->>'type' = ANY($1::text[])
        AND jsonb_typeof(j->'data') = 'object' AND jsonb_typeof(j->'metadata') = 'object'
        AND pg_input_is_valid(j->>'stream_id', 'uuid') AND pg_input_is_valid(j->>'recorded_at', 'timestamptz')
        AND (j->>'hash') ~ '^[0-9a-f]{64}$'
    ) IS NOT FALSE
"""
#: The first line whose seq is not the head's plus its line number.
_OUT_OF_SEQUENCE = """
    SELECT line, text::jsonb->>'seq' AS seq FROM import_lines
    WHERE NOT pg_input_is_valid(text::jsonb->>'seq', 'bigint')
       OR (text::jsonb->>'seq')::bigint <> $1::bigint + line
    ORDER BY line LIMIT 1
"""
_INSERT = """
    INSERT INTO events (seq, type, stream_id, data, metadata, recorded_at, hash)
    SELECT (j->>'seq')::bigint, j->>'type', (j->>'stream_id')::uuid, j->'data', j->'metadata',
           (j->>'recorded_at')::timestamptz, decode(j->>'hash', 'hex')
    FROM (SELECT line, text::jsonb AS j FROM import_lines) AS l ORDER BY line
"""
_MOVE_HEAD = """
    UPDATE ledger_head SET seq = e.seq, hash = e.hash
    FROM (SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1) AS e
"""


class ImportFailed(Exception):  # ImportError is a builtin
    """The file cannot be imported into this ledger; nothing of it was kept."""


class ImportRefused(ImportFailed):
    """A line of the file cannot continue this ledger; ``line`` is the first at fault."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}; nothing was imported")
        self.line = line


async def import_log(conn: asyncpg.Connection, source: Any) -> Rebuilt:
    """Load the export ``source`` (a path or a binary file) after the head of
    the log and rebuild the projections; what was rebuilt. Raises
    :class:`ImportRefused` (and changes nothing) if it does not continue the
    log line by line, or breaks the hash chain."""
    async with conn.transaction(isolation="serializable"):
        await conn.execute(LOCK)
        head = await read_head(conn)
        await conn.execute(_STAGE)
        await conn.copy_to_table(
            "import_lines", source=source, columns=["text"], format="csv", quote=QUOTE, delimiter=DELIMITER
        )
        bad = await conn.fetchval(_NOT_AN_OBJECT)
        if bad is not None:
            raise ImportRefused(bad, "not a JSON object")
        bad = await conn.fetchval(_NOT_AN_EVENT, list(EVENT_TYPES))
        if bad is not None:
            raise ImportRefused(
                bad, "not an event line of an export (type, data, metadata, stream_id, recorded_at, hash)"
            )
        out_of_sequence = await conn.fetchrow(_OUT_OF_SEQUENCE, head.seq)
        if out_of_sequence is not None:
            line, seq = out_of_sequence
            raise ImportRefused(line, f"seq {seq} does not continue the log at seq {head.seq + line}")
        await conn.execute(_INSERT)
        await conn.execute(_MOVE_HEAD)
        try:
            return await rebuild_locked(conn)
        except ChainBroken as error:
            if error.seq <= head.seq:
                raise ImportFailed(
                    f"this ledger's own log is broken at seq {error.seq}; nothing was imported"
                ) from None
            line = error.seq - head.seq
            raise ImportRefused(line, f"the hash chain breaks at seq {error.seq}") from None
        except (KeyError, ValueError, msgspec.ValidationError) as error:
            raise ImportFailed(f"an event of the file cannot be applied ({error!r}); nothing was imported") from None
