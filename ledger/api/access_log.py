"""The access log: one line per request, with the fields an operator filters on.

The line's text says what a person needs; the same facts ride along as
fields (``request_id``, ``method``, ``route``, ``path``, ``status``,
``duration_ms``), which the JSON log format writes out. ``route`` is the
route's template (``/v1/transfers/{id}``), never the raw path, so that it
has few values; a request no route matched has none.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .middlewares import REQUEST_ID_KEY, route_template


class AccessLogger(AbstractAccessLogger):
    """One INFO line per request on the logger aiohttp gives (``aiohttp.access``).

    The record is made directly, without the search for the caller's source
    line that :meth:`logging.Logger.info` makes: the line says where it comes
    from by its logger's name.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        duration_ms = round(time * 1000, 3)
        logger = self.logger
        record = logger.makeRecord(
            logger.name,
            logging.INFO,
            __file__,
            0,
            '%s "%s %s HTTP/%d.%d" %d %.1f ms',
            (request.remote, request.method, request.path_qs, *request.version, response.status, duration_ms),
            None,
            extra={
                "request_id": request.get(REQUEST_ID_KEY),
                "method": request.method,
                "route": route_template(request),
                "path": request.path,
                "status": response.status,
                "duration_ms": duration_ms,
            },
        )
        logger.handle(record)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
