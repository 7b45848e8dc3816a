"""The append: decide a batch of commands and record it, in one transaction.

Run inside a SERIALIZABLE transaction (see :mod:`ledger.store.writer`):

1. lock the head table, before any read, so the snapshot sees every earlier
   append and appends are serial: seq is gapless and commit-ordered;
2. load what the batch touches with one query per table (``= ANY($1)``);
3. decide every command in order with the domain's :class:`Ledger`;
4. write events (hash-chained) and projections (:mod:`ledger.store.projections`),
   move the head and NOTIFY the new head, all in one statement: data-modifying
   CTEs with one ``unnest`` per table. Under group commit most appends are
   small, and each round trip to the server is a wait that no batching shortens.

Everything here may run again from the start after a conflict, so it only
reads and writes inside the transaction it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from ..domain.chain import event_hash
from ..domain.commands import Command, account_ids, transfer_ids
from ..domain.events import RecordedEvent
from ..domain.ledger import Ledger, Outcome, Recorded
from .projections import PARAMETERS, PROJECTION_CTES, Placeholders, columns, projection_parameters
from .rows import ACCOUNT_SELECT, TRANSFER_SELECT, account_from_row, transfer_from_row

#: The channel that carries the new head seq after each append.
NOTIFY_CHANNEL = "ledger_events"

#: The append lock: taken first by every append, and by whatever must see no
#: append happen while it runs (repair, rebuild).
LOCK = "LOCK TABLE ledger_head IN EXCLUSIVE MODE"
HEAD = "SELECT seq, hash FROM ledger_head"
_LOAD_ACCOUNTS = ACCOUNT_SELECT + " WHERE a.id = ANY($1::uuid[])"
_LOAD_TRANSFERS = TRANSFER_SELECT + " WHERE id = ANY($1::uuid[])"

_p = Placeholders(after=PARAMETERS)
_WRITE = f"""
WITH {PROJECTION_CTES},
new_events AS (
    INSERT INTO events (seq, type, stream_id, data, metadata, recorded_at, hash)
    SELECT * FROM {_p.unnest("bigint", "text", "uuid", "jsonb", "jsonb", "timestamptz", "bytea")}
),
new_head AS (
    UPDATE ledger_head SET seq = {_p.one("bigint")}, hash = {_p.one("bytea")}
)
SELECT pg_notify({_p.one("text")}, {_p.one("text")})
"""
del _p


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """The commands of one caller: decided in order, all-or-nothing if ``atomic``."""

    commands: Sequence[Command]
    atomic: bool = False
    #: Stored with each event it causes: who asked (request id, token name).
    metadata: dict[str, Any] = field(default_factory=dict)


async def append(
    conn: asyncpg.Connection, requests: Sequence[AppendRequest], *, now: datetime
) -> list[list[Outcome]]:
    """Decide and record ``requests`` in order; one list of outcomes for each.

    Must run in a SERIALIZABLE transaction on ``conn``.
    """
    await conn.execute(LOCK)
    head = await conn.fetchrow(HEAD)
    commands = [c for r in requests for c in r.commands]
    transfers = [
        transfer_from_row(row)
        for row in await conn.fetch(_LOAD_TRANSFERS, list({i for c in commands for i in transfer_ids(c)}))
    ]
    # A decision on a transfer moves that transfer's accounts.
    wanted = {i for c in commands for i in account_ids(c)}
    wanted.update(i for t in transfers for i in (t.debit_account_id, t.credit_account_id))
    accounts = await conn.fetch(_LOAD_ACCOUNTS, list(wanted))

    ledger = Ledger(map(account_from_row, accounts), transfers, head=head["seq"])
    results = [
        ledger.execute_all(r.commands, now=now, metadata=r.metadata, atomic=r.atomic)
        for r in requests
    ]
    recorded = [o for outcomes in results for o in outcomes if isinstance(o, Recorded)]
    if recorded:
        events, last_hash = _event_rows([o.record for o in recorded], head["hash"])
        await conn.execute(
            _WRITE,
            *projection_parameters(ledger, [(o.record, o.entries) for o in recorded]),
            *columns(events, 7),
            ledger.head,
            last_hash,
            NOTIFY_CHANNEL,
            str(ledger.head),
        )
    return results


def _event_rows(records: list[RecordedEvent], previous_hash: bytes) -> tuple[list[tuple], bytes]:
    """The events' rows, each hash-chained to the one before, and the last hash."""
    rows = []
    for record in records:
        event = record.event
        data = event.to_data()
        previous_hash = event_hash(
            previous_hash,
            seq=record.seq,
            type=event.type,
            stream_id=event.stream_id,
            data=data,
            metadata=record.metadata,
            recorded_at=record.recorded_at,
        )
        rows.append((record.seq, event.type, event.stream_id, data, record.metadata, record.recorded_at, previous_hash))
    return rows, previous_hash


