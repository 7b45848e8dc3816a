"""``ledger import``: an export loaded into a ledger whose head it continues.

In one SERIALIZABLE transaction holding the append lock: the file's lines
are COPYed into a staging table, each must be a JSON object whose ``seq``
continues the log (the first just after the head, then one by one), the
events go into the log as the lines give them (seq, recorded_at and hash
kept), the head moves to the last, and the projections are rebuilt from the
whole log by the code every rebuild uses (:func:`~ledger.store.rebuild.rebuild_locked`),
which checks the hash chain as it goes, and the Merkle tree grows by the new
events (:func:`~ledger.store.tree.grow`). Whatever is wrong, the transaction
rolls back and the ledger is as it was: nothing of the file is kept.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from ..domain.events import EVENT_TYPES
from .head import LOCK
from .rebuild import Rebuilt, rebuild_locked
from .replay import ChainBroken
from .tree import grow, read_tip

#: How COPY reads an export: each line one CSV column, quoted and delimited
#: by control characters that JSON text never holds raw, so taken as it is.
QUOTE, DELIMITER = "\x01", "\x02"

_STAGE = """
    CREATE TEMP TABLE import_lines (line bigint GENERATED ALWAYS AS IDENTITY, text text NOT NULL)
    ON COMMIT DROP
"""
#: Each line parsed once, into jsonb (NULL where it is not JSON), for the
#: check and the insert that follow.
_PARSE = """
    CREATE TEMP TABLE import_events ON COMMIT DROP AS
    SELECT line, CASE WHEN pg_input_is_valid(text, 'jsonb') THEN text::jsonb END AS j FROM import_lines
"""
#: The first line at fault and what is wrong with it: not a JSON object; not
#: an event as an export writes it; or a seq other than the head's ($2) plus
#: its line number.
_FIRST_FAULT = """
    SELECT line, fault, j->>'seq' AS seq FROM (
        SELECT line, j, CASE
            WHEN j IS NULL OR jsonb_typeof(j) <> 'object' THEN 'object'
            WHEN NOT (
                j->>'type' = ANY($1::text[])
                AND jsonb_typeof(j->'data') = 'object' AND jsonb_typeof(j->'metadata') = 'object'
                AND pg_input_is_valid(j->>'stream_id', 'uuid')
                AND pg_input_is_valid(j->>'recorded_at', 'timestamptz')
                AND (j->>'hash') ~ '^[0-9a-f]{64}$'
            ) IS NOT FALSE THEN 'event'
            WHEN NOT pg_input_is_valid(j->>'seq', 'bigint') OR (j->>'seq')::bigint <> $2::bigint + line
                THEN 'seq'
        END AS fault
        FROM import_events
    ) AS checked
    WHERE fault IS NOT NULL ORDER BY line LIMIT 1
"""
_INSERT = """
    INSERT INTO events (seq, type, stream_id, data, metadata, recorded_at, hash)
    SELECT (j->>'seq')::bigint, j->>'type', (j->>'stream_id')::uuid, j->'data', j->'metadata',
           (j->>'recorded_at')::timestamptz, decode(j->>'hash', 'hex')
    FROM import_events ORDER BY line
"""
_MOVE_HEAD = """
    UPDATE ledger_head SET seq = e.seq, hash = e.hash
    FROM (SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1) AS e
"""


#: What each fault of :data:`_FIRST_FAULT` is said as.
_FAULTS = {
    "object": "not a JSON object",
    "event": "not an event line of an export (type, data, metadata, stream_id, recorded_at, hash)",
    "seq": "seq {seq} does not continue the log at seq {expected}",
}


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
        head, tree = await read_tip(conn)
        await conn.execute(_STAGE)
        await conn.copy_to_table(
            "import_lines", source=source, columns=["text"], format="csv", quote=QUOTE, delimiter=DELIMITER
        )
        await conn.execute(_PARSE)
        fault = await conn.fetchrow(_FIRST_FAULT, list(EVENT_TYPES), head.seq)
        if fault is not None:
            line, what, seq = fault
            raise ImportRefused(line, _FAULTS[what].format(seq=seq, expected=head.seq + line))
        await conn.execute(_INSERT)
        await conn.execute(_MOVE_HEAD)
        try:
            rebuilt = await rebuild_locked(conn)
        except ChainBroken as error:
            if error.seq <= head.seq:
                raise ImportFailed(
                    f"this ledger's own log is broken at seq {error.seq}; nothing was imported"
                ) from None
            line = error.seq - head.seq
            raise ImportRefused(line, f"the hash chain breaks at seq {error.seq}") from None
        except (KeyError, ValueError, msgspec.ValidationError) as error:
            raise ImportFailed(f"an event of the file cannot be applied ({error!r}); nothing was imported") from None
        await grow(conn, tree)
        return rebuilt
