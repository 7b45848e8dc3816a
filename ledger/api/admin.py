"""``/admin/v1``: operators' endpoints (the ``admin`` scope)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..store.connection import connect
from ..store.reconcile import Report, reconcile
from . import codec
from .keys import DSN
from .schemas import ReconciliationIn
from .streams import stream_connection

routes = web.RouteTableDef()


@routes.post("/admin/v1/reconciliations")
async def create_reconciliation(request: web.Request) -> web.Response:
    """Replay the log, compare every stored balance, check the chain; with
    ``repair``, rewrite the balances that differ. 200 with the report."""
    body = await codec.decode(request, ReconciliationIn, optional=True)
    if body.repair:
        # It writes, so it runs on the primary, on a connection of its own.
        conn = await connect(request.app[DSN])
        try:
            report = await reconcile(conn, repair=True)
        finally:
            await conn.close()
    else:
        # A long read: a stream connection (the replica's, when there is one),
        # never one that writes need.
        async with stream_connection(request) as conn:
            report = await reconcile(conn, repair=False)
    return codec.respond(request, report_out(report))


def report_out(report: Report) -> dict[str, Any]:
    """The report as API.md shows it (and ``ledger reconcile`` prints it)."""
    return {
        "ok": report.ok,
        "head_seq": report.head_seq,
        "events_scanned": report.events_scanned,
        "accounts_checked": report.accounts_checked,
        "mismatches": [
            {
                "account_id": m.account_id,
                "field": m.field,
                "stored": m.stored,
                "replayed": m.replayed,
            }
            for m in report.mismatches
        ],
        "totals": [
            {
                "currency": t.currency,
                "debits_posted": format(t.debits_posted, "f"),
                "credits_posted": format(t.credits_posted, "f"),
                "debits_pending": format(t.debits_pending, "f"),
                "credits_pending": format(t.credits_pending, "f"),
                "balanced": t.balanced,
            }
            for t in report.totals
        ],
        "chain": {"ok": report.chain.ok, "first_bad_seq": report.chain.first_bad_seq},
        "replay_error": report.replay_error,
        "repaired": report.repaired,
        "duration_ms": report.duration_ms,
    }
