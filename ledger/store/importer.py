"""``ledger import``: an export loaded into a ledger whose head it continues.

In one SERIALIZABLE transaction holding the append lock: the file's lines
are COPYed into a staging table, each must be a JSON object whose ``seq``
continues the log (the first just after the head, then one by one), the
events go into the log as the lines give them (seq, recorded_at and hash
kept) in one INSERT that reads each line once (a file it cannot take whole
is then checked line by line, to name the first at fault), the head moves
to the last, and the projections are rebuilt from the
whole log by the code every rebuild uses (:func:`~ledger.store.rebuild.rebuild_locked`),
which checks the hash chain as it goes, and the Merkle tree grows by the new
events as the rebuild reads them. Whatever is wrong, the transaction
rolls back and the ledger is as it was: nothing of the file is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import asyncpg

from ..domain.events import EVENT_TYPES
from .head import LOCK
from .rebuild import Rebuilt, rebuild_locked
from .replay import ChainBroken, EventUnappliable
from .tables import EVENTS
from .tree import read_tip

#: How COPY reads an export: each line one CSV column, quoted and delimited
#: by control characters that JSON text never holds raw, so taken as it is.
QUOTE, DELIMITER = "\x01", "\x02"

_STAGE = """
    CREATE TEMP TABLE import_lines (line bigint GENERATED ALWAYS AS IDENTITY, text text NOT NULL)
    ON COMMIT DROP
"""
#: An event line's fields, as an export writes them: its columns, the hash in hex.
_FIELDS = ", ".join(f"{c} {'text' if c == 'hash' else EVENTS.types[c]}" for c in EVENTS.columns)


def _shaped_as_event(field: Callable[[str], str]) -> str:
    """The SQL condition that a line's fields (``field(name)`` spells each:
    data and metadata as jsonb, the others as text) are an event line's: a
    type of ``$1``, objects for data and metadata, a hash of 64 hex digits
    (what is left of it after its leading hex digits is nothing: a regular
    expression would take the most time of the whole condition)."""
    return (
        f"{field('type')} = ANY($1::text[])"
        f" AND jsonb_typeof({field('data')}) = 'object' AND jsonb_typeof({field('metadata')}) = 'object'"
        f" AND length({field('hash')}) = 64 AND ltrim({field('hash')}, '0123456789abcdef') = ''"
    )


#: Every line into the log as the event it gives, its JSON text read once
#: (``jsonb_to_record``), in the order the staging table is read (the
#: file's; seq, not where rows are stored, orders the log). A line left out
#: (not :func:`_shaped_as_event`, or a seq other than the head's ``$2``
#: plus its line number), or one that fails (not a JSON object, a field
#: that does not read as its column's type, or is missing), makes the
#: caller look for the first line at fault (:data:`_FIRST_FAULT`).
_INSERT = f"""
    INSERT INTO events ({EVENTS.column_list()})
    SELECT {", ".join("decode(r.hash, 'hex')" if c == "hash" else f"r.{c}" for c in EVENTS.columns)}
    FROM import_lines, jsonb_to_record(text::jsonb) AS r({_FIELDS})
    WHERE {_shaped_as_event(lambda name: f"r.{name}")} AND r.seq = $2::bigint + line
"""
#: The first line at fault and what is wrong with it: not a JSON object; not
#: an event as an export writes it; or a seq other than the head's ($2) plus
#: its line number. For a file :data:`_INSERT` could not take whole.
_FIRST_FAULT = f"""
    SELECT line, fault, j->>'seq' AS seq FROM (
        SELECT line, j, CASE
            WHEN j IS NULL OR jsonb_typeof(j) <> 'object' THEN 'object'
            WHEN (
                {_shaped_as_event(lambda name: f"j->'{name}'" if name in ("data", "metadata") else f"(j->>'{name}')")}
                AND pg_input_is_valid(j->>'stream_id', 'uuid')
                AND pg_input_is_valid(j->>'recorded_at', 'timestamptz')
            ) IS NOT TRUE THEN 'event'
            WHEN CASE WHEN pg_input_is_valid(j->>'seq', 'bigint') THEN (j->>'seq')::bigint = $2::bigint + line END
                IS NOT TRUE THEN 'seq'
        END AS fault
        FROM (
            SELECT line, CASE WHEN pg_input_is_valid(text, 'jsonb') THEN text::jsonb END AS j FROM import_lines
        ) AS parsed
    ) AS checked
    WHERE fault IS NOT NULL ORDER BY line LIMIT 1
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


#: Where in the file COPY failed, as PostgreSQL's context of the error says.
_COPY_LINE = re.compile(r"COPY import_lines, line (\d+)")


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
        try:
            status = await conn.copy_to_table(
                "import_lines", source=source, columns=["text"], format="csv", quote=QUOTE, delimiter=DELIMITER
            )
        except asyncpg.DataError as error:  # a line COPY cannot take as one text column
            line = _COPY_LINE.search(getattr(error, "context", None) or "")
            if line is None:
                raise ImportFailed(f"the file cannot be read: {error}; nothing was imported") from None
            what = "not UTF-8 text" if isinstance(error, asyncpg.CharacterNotInRepertoireError) else "not a line"
            raise ImportRefused(int(line[1]), f"{what} ({error})") from None
        await _insert_events(conn, head.seq, lines=_count(status))
        await conn.execute(_MOVE_HEAD)
        try:
            rebuilt = await rebuild_locked(conn, tree=tree, imported_after=head.seq)
        except (ChainBroken, EventUnappliable) as error:
            if error.seq <= head.seq:
                raise ImportFailed(f"this ledger's own log is broken: {error}; nothing was imported") from None
            if isinstance(error, ChainBroken):
                raise ImportRefused(error.seq - head.seq, f"the hash chain breaks at seq {error.seq}") from None
            raise ImportRefused(error.seq - head.seq, f"seq {error.seq}: {error.reason}") from None
        except asyncpg.IntegrityConstraintViolationError as error:
            detail = f" ({error.detail})" if getattr(error, "detail", None) else ""
            raise ImportFailed(
                f"an event of the file breaks a rule of the ledger: {error}{detail}; nothing was imported"
            ) from None
        return rebuilt


async def _insert_events(conn: asyncpg.Connection, head: int, *, lines: int) -> None:
    """Every staged line into the log after ``head``, or :class:`ImportRefused`
    naming the first line at fault (and nothing inserted)."""
    types = list(EVENT_TYPES)
    try:
        async with conn.transaction():  # a savepoint: a file at fault leaves no event
            inserted = _count(await conn.execute(_INSERT, types, head))
            if inserted != lines:
                raise _Incomplete
    except (_Incomplete, asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as error:
        fault = await conn.fetchrow(_FIRST_FAULT, types, head)
        if fault is None:  # what the insert refused, the check must name
            raise ImportFailed(f"the file cannot be imported ({error!r}); nothing was imported") from None
        line, what, seq = fault
        raise ImportRefused(line, _FAULTS[what].format(seq=seq or "missing", expected=head + line)) from None


class _Incomplete(Exception):
    """Some staged line was left out of the insert: not an event, or not the next."""


def _count(status: str) -> int:
    """The rows a command's status (``COPY 5``, ``INSERT 0 5``) counts."""
    return int(status.rsplit(" ", 1)[1])
