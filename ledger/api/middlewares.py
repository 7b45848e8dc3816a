"""Cross-cutting concerns: the request id, and errors in the one documented shape."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..domain.codes import Code, LedgerError
from ..store.retry import CONNECTION_LOST, Unavailable
from .codec import error_response
from .keys import SETTINGS

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID = "X-Request-ID"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
#: When the service began a request, on :func:`time.perf_counter`'s clock:
#: the start of what its metrics and its access line time. (aiohttp's own
#: start is on the event loop's clock, which uvloop keeps to the millisecond.)
REQUEST_STARTED_KEY = web.RequestKey("request_started", float)
#: The status of a response that has begun (a stream's): what a request
#: cancelled after it (a stream cut at a stop) is counted with.
STATUS_SENT_KEY = web.RequestKey("status_sent", int)
# A caller's id is echoed only if it is short printable ASCII: it goes into
# logs, headers and the event log.
_VALID_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")

_HTTP_CODES = {
    400: (Code.MALFORMED_BODY, "the request could not be read"),
    404: (Code.NOT_FOUND, "no such endpoint"),
    405: (Code.METHOD_NOT_ALLOWED, "method not allowed on this endpoint"),
    413: (Code.BODY_TOO_LARGE, "the body is too large"),
}


def request_id(request: web.Request) -> str:
    return request[REQUEST_ID_KEY]


def seconds_since_started(request: web.BaseRequest, otherwise: float) -> float:
    """Seconds since the service began ``request`` (:data:`REQUEST_STARTED_KEY`);
    ``otherwise`` for a request refused before any middleware saw it (one
    aiohttp could not parse)."""
    started = request.get(REQUEST_STARTED_KEY)
    return otherwise if started is None else time.perf_counter() - started


#: The hex digit of a version-4 UUID's variant (``10xx``), by the random digit it replaces.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


class RequestIds:
    """New request ids: random UUIDs (version 4, as :func:`uuid.uuid4` spells
    them), from random bytes drawn ``per_draw`` ids at a time, so that a
    request does not pay a system call and a ``UUID`` object for its id."""

    def __init__(self, per_draw: int = 256) -> None:
        self._per_draw = per_draw
        self._forget()
        # A forked worker must not hand out the ids its parent drew.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._hex = ""
        self._at = 0

    def __call__(self) -> str:
        at = self._at
        if at == len(self._hex):
            self._hex, at = os.urandom(16 * self._per_draw).hex(), 0
        h = self._hex[at : at + 32]
        self._at = at + 32
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


new_request_id = RequestIds()


def route_template(request: web.BaseRequest) -> str | None:
    """The template of the route that took ``request`` (``/v1/transfers/{id}``),
    if one did: a label with few values, unlike the path."""
    try:
        match_info = request.match_info  # type: ignore[attr-defined]  # a web.Request's
    except (AttributeError, AssertionError):
        # A low-level request has none; aiohttp asserts that a request
        # refused before routing (one it could not parse) has none yet.
        return None
    resource = getattr(getattr(match_info, "route", None), "resource", None)
    return resource.canonical if resource is not None else None


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID, "")
    request[REQUEST_ID_KEY] = given if given and _VALID_REQUEST_ID.fullmatch(given) else new_request_id()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID] = request[REQUEST_ID_KEY]
        raise
    if not response.prepared:
        response.headers[REQUEST_ID] = request[REQUEST_ID_KEY]
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into ``{"error": {"code", "message", "field"?}}``."""
    try:
        return await handler(request)
    except LedgerError as error:
        return error_response(request, error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Handlers raise LedgerError; only aiohttp itself raises these.
        code, message = _HTTP_CODES.get(exc.status, (Code.INTERNAL_ERROR, exc.reason))
        return error_response(request, LedgerError(code, message), headers=_allow(exc))
    except Unavailable as error:
        return _unavailable(request, str(error), error.retry_after)
    except TimeoutError:  # a read's query or connection, given up (api.pool); an OSError, so first
        limit = request.app[SETTINGS].database_timeout
        log.warning("the database did not answer a read within %g s", limit)
        return _unavailable(request, f"the database did not answer within {limit:g} s", 1)
    except CONNECTION_LOST as error:
        log.warning("database unreachable: %s", error)
        return _unavailable(request, "the database is unreachable", 1)
    except Exception:
        log.exception("request %s failed", request.get(REQUEST_ID_KEY))
        return error_response(
            request,
            LedgerError(Code.INTERNAL_ERROR, f"internal error; request id {request.get(REQUEST_ID_KEY)}"),
        )


def _unavailable(request: web.Request, message: str, retry_after: int) -> web.Response:
    return error_response(request, LedgerError(Code.UNAVAILABLE, message), headers={"Retry-After": str(retry_after)})


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None
