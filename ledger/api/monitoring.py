"""What an operator watches the service by: the request metrics middleware,
``GET /metrics``, and the sampler of the pools' gauges (see :mod:`ledger.metrics`)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
from aiohttp import hdrs, web
from prometheus_client import Counter, Histogram

from .. import metrics
from ..store.connection import PROBE_WAIT, read_within
from ..store.head import read_head
from ..store.retry import CONNECTION_LOST
from .keys import POOL, STREAM_POOL
from .middlewares import REQUEST_STARTED_KEY, STATUS_SENT_KEY, Handler, route_template
from .openapi import documented

routes = web.RouteTableDef()

#: Methods counted by name; any other is counted as ``other`` (a label with few values).
_METHODS = frozenset(hdrs.METH_ALL)
#: The ``route`` label of a request that no route took (404, 405).
UNMATCHED = "unmatched"
#: Seconds between samples of the pools: how old another worker's pool
#: gauges may be when a scrape lands on this one (the scraped worker's are current).
SAMPLE_INTERVAL = 1.0


#: The request counter and duration histogram of each (method, route,
#: status) seen: ``labels()`` checks its arguments and takes a lock on every
#: call, where a request can afford one dict lookup. Bounded, as the labels are.
_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def _request_series(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    key = (method, route, status)
    found = _series.get(key)
    if found is None:
        found = _series[key] = (
            metrics.HTTP_REQUESTS.labels(method, route, str(status)),
            metrics.HTTP_REQUEST_DURATION.labels(method, route),
        )
    return found


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request, by method, route template and the status it got
    (a stream cut at a stop: the status it began with), and time it (a
    stream until its last line). The first middleware: where
    a request's time starts (:data:`REQUEST_STARTED_KEY`)."""
    request[REQUEST_STARTED_KEY] = started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = request.get(STATUS_SENT_KEY, status)
        raise
    finally:
        method = request.method if request.method in _METHODS else "other"
        requests, duration = _request_series(method, route_template(request) or UNMATCHED, status)
        requests.inc()
        duration.observe(time.perf_counter() - started)


@routes.get("/metrics")
@documented(
    "Metrics in Prometheus text format (OpenMetrics if Accept asks), summed over every worker",
    ok={200: str},
    media=("text/plain", "application/openmetrics-text"),
    database=False,
)
async def scrape(request: web.Request) -> web.Response:
    """Every metric in Prometheus text format, summed over the workers."""
    sample_pools(request.app)
    # Without an answer in time, the head this worker last saw stands: the
    # metrics are wanted most when the database is in trouble.
    with contextlib.suppress(TimeoutError, asyncpg.PostgresError, *CONNECTION_LOST):
        metrics.EVENT_LOG_HEAD_SEQ.set((await read_within(request.app[POOL], PROBE_WAIT, read_head)).seq)
    body, content_type = metrics.exposition(request.headers.get(hdrs.ACCEPT))
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})


def sample_pools(app: web.Application) -> None:
    for name, pool in (("read", app[POOL]), ("stream", app[STREAM_POOL])):
        idle = pool.get_idle_size()
        metrics.DB_POOL_CONNECTIONS.labels(name, "idle").set(idle)
        metrics.DB_POOL_CONNECTIONS.labels(name, "in_use").set(pool.get_size() - idle)


async def sampling(app: web.Application) -> None:
    """Sample the pools every :data:`SAMPLE_INTERVAL`, until cancelled."""
    while True:
        sample_pools(app)
        await asyncio.sleep(SAMPLE_INTERVAL)
