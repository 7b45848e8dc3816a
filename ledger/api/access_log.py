"""The access log: one line per request, with the fields an operator filters on.

The line's text says what a person needs; the same facts ride along as
fields (``request_id``, ``method``, ``route``, ``path``, ``status``,
``duration_ms``), which the JSON log format writes out. ``route`` is the
route's template (``/v1/transfers/{id}``), never the raw path, so that it
has few values; a request no route matched has none.
"""

from __future__ import annotations

import logging
import time as _time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .middlewares import REQUEST_ID_KEY, route_template


class AccessLogger(AbstractAccessLogger):
    """One INFO line per request on the logger aiohttp gives (``aiohttp.access``).

    Its records are copies of one made when it starts, with the request's
    fields and the time set: :class:`logging.LogRecord` would otherwise look
    up, for every request, the same source file, module and process names
    that an access line never shows. Everything after the record (filters,
    handlers, formatters) is the logging module's own.
    """

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._template = vars(logger.makeRecord(logger.name, logging.INFO, __file__, 0, _MESSAGE, (), None))

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        duration_ms = round(time * 1000, 3)
        created = _time.time()
        record = logging.LogRecord.__new__(logging.LogRecord)
        record.__dict__ = {
            **self._template,
            "args": (request.remote, request.method, request.path_qs, *request.version, response.status, duration_ms),
            "created": created,
            "msecs": (created - int(created)) * 1000 // 1,
            "relativeCreated": (created - _STARTED) * 1000,
            "request_id": request.get(REQUEST_ID_KEY),
            "method": request.method,
            "route": route_template(request),
            "path": request.path,
            "status": response.status,
            "duration_ms": duration_ms,
        }
        self.logger.handle(record)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


_MESSAGE = '%s "%s %s HTTP/%d.%d" %d %.1f ms'
#: What ``relativeCreated`` counts from, as the logging module counts it.
_STARTED: float = logging._startTime  # type: ignore[attr-defined]
