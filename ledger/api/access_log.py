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
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..logs import ACCESS_MESSAGE, AccessArgs, access_handler
from .middlewares import REQUEST_ID_KEY, route_template, seconds_since_started


class AccessLogger(AbstractAccessLogger):
    """One INFO line per request on the logger aiohttp gives (``aiohttp.access``).

    aiohttp makes one per connection, which finds once where its lines go:
    to the service's own handler, without the making of a record, when that
    handler takes them with nothing on the way (:func:`ledger.logs.access_handler`);
    otherwise as records, through the logger. Logging configured again
    applies to the connections made after.
    """

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._handler = access_handler(logger)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        duration_ms = seconds_since_started(request, otherwise=time) * 1000
        status = response.status
        args: AccessArgs = (request.remote, request.method, request.raw_path, *request.version, status, duration_ms)

        def fields() -> dict[str, Any]:
            return {
                "request_id": request.get(REQUEST_ID_KEY),
                "method": request.method,
                "route": route_template(request),
                "path": request.path,
                "status": status,
                "duration_ms": round(duration_ms, 3),
            }

        if self._handler is not None:
            self._handler.handle_access(_time.time(), args, fields)
        else:
            self.logger.info(ACCESS_MESSAGE, *args, extra=fields())

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
