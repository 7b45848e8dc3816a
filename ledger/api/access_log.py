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
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        duration_ms = round(time * 1000, 3)
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %.1f ms',
            request.remote,
            request.method,
            request.path_qs,
            *request.version,
            response.status,
            duration_ms,
            extra={
                "request_id": request.get(REQUEST_ID_KEY),
                "method": request.method,
                "route": route_template(request),
                "path": request.path,
                "status": response.status,
                "duration_ms": duration_ms,
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
