"""``/health``: liveness, and readiness (database answers, schema at head)."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from ..store import migrations, replica
from ..store.connection import PROBE_WAIT, Conn, read_within
from ..store.head import read_head
from ..store.retry import CANNOT_OPEN, CONNECTION_LOST
from . import codec
from .keys import COALESCER, POOL, SETTINGS, STREAM_POOL, STREAMS, WRITER
from .openapi import documented
from .responses import Live, Ready

routes = web.RouteTableDef()


@routes.get("/health/live")
@documented("Liveness: 200 while the process runs", ok={200: Live}, database=False)
async def live(request: web.Request) -> web.Response:
    """200 while the process runs, with its pid (which worker answered)."""
    return codec.respond(request, Live(status="ok", pid=os.getpid()))


@routes.get("/health/ready")
@documented(
    "Readiness: the database answers and the schema is at head",
    ok={200: Ready, 503: Ready},
    database=False,
    says={503: "Not ready: `reason` says what is wrong."},
)
async def ready(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    database: dict[str, Any] = {
        "pool_size": pool.get_size(),
        "pool_idle": pool.get_idle_size(),
        "pool_max": pool.get_max_size(),
        "head_revision": migrations.head_revision(),
        "append_retries": request.app[WRITER].retries,
        "appends_decided_ahead": request.app[COALESCER].decided_ahead,
        "appends_decided_again": request.app[WRITER].decided_again,
        "appends": request.app[COALESCER].appends,
        "appended_requests": request.app[COALESCER].requests,
        "write_queue": request.app[COALESCER].queued,
        "stream_pool_size": request.app[STREAM_POOL].get_size(),
        "stream_pool_idle": request.app[STREAM_POOL].get_idle_size(),
        "stream_pool_max": request.app[STREAM_POOL].get_max_size(),
        "streams_open": request.app[STREAMS].count,
    }
    try:
        revision, database["head_seq"] = await read_within(pool, PROBE_WAIT, _revision_and_head)
    except CONNECTION_LOST + (TimeoutError,) as error:
        why = str(error) or f"no answer within {PROBE_WAIT:g} s"
        return codec.respond(
            request,
            Ready(status="unavailable", reason=f"database unreachable: {why}", database=database),
            status=503,
        )
    database["schema_revision"] = revision
    settings = request.app[SETTINGS]
    if settings.read_database_url is not None:
        database["replica"] = await _replica(settings.read_database_url, database["head_seq"])
    if request.app[COALESCER].failed:
        return codec.respond(
            request,
            Ready(status="unavailable", reason="the write queue failed: see the log, restart", database=database),
            status=503,
        )
    if revision != database["head_revision"]:
        return codec.respond(
            request,
            Ready(status="unavailable", reason="schema is not at head: run `ledger migrate`", database=database),
            status=503,
        )
    return codec.respond(request, Ready(status="ok", database=database))


async def _revision_and_head(conn: Conn) -> tuple[str | None, int]:
    return await migrations.current_revision(conn), (await read_head(conn)).seq


async def _replica(dsn: str, primary_head: int) -> dict[str, object]:
    """The read replica's state. A replica that is down leaves the service
    ready: writes and point reads do not need it, only its long reads fail."""
    try:
        state = await replica.read_state(dsn)
    except CANNOT_OPEN as error:
        return {"status": "unavailable", "reason": f"replica unreachable: {error}"}
    return {
        "status": "ok",
        "standby": state.standby,
        "head_seq": state.head_seq,
        "behind_seq": max(primary_head - state.head_seq, 0),
        "replay_lag_seconds": round(state.replay_lag_seconds, 3),
    }
