"""The service's metrics: what ``GET /metrics`` exposes (docs/api.md, Operations).

The metric objects are process-wide, as prometheus-client has them, and are
moved where the work is done: requests by the HTTP middleware, appends by
the writer, conflicts by the retry loop, the queue by the coalescer, streams
by the stream runner, pools by a sampler.

Under ``ledger serve --workers N`` the parent sets ``PROMETHEUS_MULTIPROC_DIR``
to a private directory before it starts the workers (see
:mod:`ledger.serving`): each worker's values then go to files there, and a
scrape on any worker sums them (prometheus-client's multiprocess mode). The
gauges say how they combine: a sum over live workers, or the largest.
Without the variable, the values are this process's own.
"""

from __future__ import annotations

import os

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

#: Where the workers of one service write their values, when there are several.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: This process's metrics (exposed as they are when there are no workers),
#: with prometheus-client's own of the process (``process_*``) and the
#: interpreter (``python_*``), which have no sum over workers.
REGISTRY = CollectorRegistry(auto_describe=True)
REGISTRY.register(PROCESS_COLLECTOR)
REGISTRY.register(PLATFORM_COLLECTOR)
REGISTRY.register(GC_COLLECTOR)

#: Append transactions hold 1 to 8190 commands.
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8190)
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "ledger_http_requests",
    "Requests answered, by method, route template and status.",
    ("method", "route", "status"),
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "ledger_http_request_duration_seconds",
    "Time from a request's arrival to its handler's return (a stream's whole length).",
    ("method", "route"),
    buckets=_SECONDS,
    registry=REGISTRY,
)
APPEND_BATCH_SIZE = Histogram(
    "ledger_append_batch_size",
    "Commands per append transaction committed.",
    buckets=_BATCH_SIZES,
    registry=REGISTRY,
)
APPEND_DURATION = Histogram(
    "ledger_append_duration_seconds",
    "Time per append transaction committed (its last attempt).",
    buckets=_SECONDS,
    registry=REGISTRY,
)
SERIALIZATION_RETRIES = Counter(
    "ledger_serialization_retries",
    "Transactions run again because PostgreSQL aborted them on a serialization conflict or deadlock.",
    registry=REGISTRY,
)
WRITE_QUEUE_DEPTH = Gauge(
    "ledger_write_queue_depth",
    "Commands waiting for an append to start recording them.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
EVENT_LOG_HEAD_SEQ = Gauge(
    "ledger_event_log_head_seq",
    "The seq of the last event in the log.",
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
DB_POOL_CONNECTIONS = Gauge(
    "ledger_db_pool_connections",
    "Connections of each pool, idle or in use.",
    ("pool", "state"),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
OPEN_STREAMS = Gauge(
    "ledger_open_streams",
    "Streams being served, by route template.",
    ("route",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)


def exposition(accept: str | None) -> tuple[bytes, str]:
    """Every metric, and its content type, in the format the ``Accept``
    header asks for (Prometheus text 0.0.4 unless it asks for another):
    summed over the workers in multiprocess mode, else this process's own.
    An ``Accept`` whose version prometheus-client cannot read is taken as
    absent, as the service takes any ``Accept`` it cannot serve."""
    try:
        encode, content_type = choose_encoder(accept or "")
    except (ValueError, TypeError):  # how prometheus-client fails on a version it cannot compare
        encode, content_type = choose_encoder("")
    if MULTIPROCESS_DIR in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # the library leaves it unannotated
        return encode(registry), content_type
    return encode(REGISTRY), content_type
