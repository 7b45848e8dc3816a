"""``/admin/v1``: operators' endpoints (the ``admin`` scope)."""

from __future__ import annotations

from aiohttp import web

from ..store.chain_ranges import ChainWorkers
from ..store.connection import connect
from ..store.reconcile import reconcile
from . import codec
from .keys import DSN, READ_DSN
from .openapi import documented
from .responses import ReportOut, report_out
from .schemas import ReconciliationIn
from .streams import stream_connection

routes = web.RouteTableDef()


@routes.post("/admin/v1/reconciliations")
@documented(
    "Reconcile: replay the log, compare every stored balance, check the hash chain",
    ok={200: ReportOut},
    body=ReconciliationIn,
    body_required=False,
    description="With `repair`, the balances that differ are rewritten from the replay.",
)
async def create_reconciliation(request: web.Request) -> web.Response:
    """Replay the log, compare every stored balance, check the chain; with
    ``repair``, rewrite the balances that differ. 200 with the report."""
    body = await codec.decode(request, ReconciliationIn, optional=True)
    if body.repair:
        # It writes, so it runs on the primary, on a connection of its own.
        own = await connect(request.app[DSN])
        try:
            report = await reconcile(own, repair=True, chain=ChainWorkers(request.app[DSN]))
        finally:
            await own.close()
    else:
        # A long read: a stream connection (the replica's, when there is one),
        # never one that writes need.
        async with stream_connection(request) as conn:
            report = await reconcile(conn, repair=False, chain=ChainWorkers(request.app[READ_DSN]))
    return codec.respond(request, report_out(report))
