"""The OpenAPI 3.1 document of every route the app serves: ``GET /openapi.json``,
and ``ledger openapi``.

Bodies in and out are described by msgspec from the very structs that decode
(:mod:`ledger.api.schemas`) and encode (:mod:`ledger.api.responses`) them, so
the document cannot drift from the wire. What a struct cannot say is declared
beside each handler with :func:`documented`: the summary, the success
statuses and their bodies, the error codes the handler itself may answer,
the query struct, the media types of a stream. The rest follows from the
route and its kind:

- path parameters (every one is a UUID);
- the token scope (:func:`ledger.api.auth.scope_of`): 401 and 403;
- a body: 400 ``malformed_body``, 413 ``body_too_large``,
  415 ``unsupported_media_type``, 422 ``invalid_field``;
- a path or query parameter: 422 ``invalid_field``;
- the database: 503 ``unavailable``.

:func:`document` raises :class:`Undocumented` for a route without a
declaration: nothing is served undocumented.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from aiohttp import hdrs, web

from ..domain.codes import Code
from .auth import scope_of
from .codec import JSON, MSGPACK, REPLAYED, respond
from .errors import status_of
from .middlewares import REQUEST_ID
from .responses import ErrorOut
from .schemas import BATCH_ITEMS, COMPONENTS, REF_TEMPLATE

Handler = TypeVar("Handler", bound=Callable[..., Any])

#: What every non-streaming body is offered in (by ``Content-Type`` and ``Accept``).
JSON_OR_MSGPACK = (JSON, MSGPACK)
NDJSON = "application/x-ndjson"

_PATH_PARAMETER = re.compile(r"\{(\w+)\}")
_STATUS_TEXT = {200: "OK", 201: "Created"}


class Undocumented(LookupError):
    """A route has no :func:`documented` declaration."""


@dataclass(frozen=True, slots=True)
class Operation:
    """What the document says of one handler beyond its route."""

    summary: str
    #: Success statuses and the type of each one's body (a stream: of each line).
    ok: Mapping[int, Any]
    #: Codes the handler itself may answer (those of its kind are added).
    errors: tuple[Code, ...] = ()
    #: The request body's struct, if it takes one.
    body: type | None = None
    #: An optional body may be empty (every field at its default).
    body_required: bool = True
    #: The struct that the query string is converted to.
    query: type | None = None
    #: The success bodies' media types.
    media: tuple[str, ...] = JSON_OR_MSGPACK
    #: A 200 may be an idempotent replay, marked ``Idempotent-Replayed: true``.
    replays: bool = False
    #: It reads or writes the database (so it may answer 503).
    database: bool = True
    description: str = ""
    #: What a success status means, where "OK" or "Created" does not say it.
    says: Mapping[int, str] = dataclasses.field(default_factory=dict)


_OPERATIONS: dict[Callable[..., Any], Operation] = {}


def documented(
    summary: str,
    *,
    ok: Mapping[int, Any],
    errors: tuple[Code, ...] = (),
    body: type | None = None,
    body_required: bool = True,
    query: type | None = None,
    media: tuple[str, ...] = JSON_OR_MSGPACK,
    replays: bool = False,
    database: bool = True,
    description: str = "",
    says: Mapping[int, str] | None = None,
) -> Callable[[Handler], Handler]:
    """Declare what the document says of the handler it decorates."""
    operation = Operation(
        summary, ok, errors, body, body_required, query, media, replays, database, description, says or {}
    )

    def register(handler: Handler) -> Handler:
        _OPERATIONS[handler] = operation
        return handler

    return register


def stream_routes(app: web.Application) -> list[str]:
    """The templates of ``app``'s routes that answer with an NDJSON stream."""
    return sorted(
        {
            route.resource.canonical
            for route in app.router.routes()
            if route.resource is not None and NDJSON in getattr(_OPERATIONS.get(route.handler), "media", ())
        }
    )


def document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of every route of ``app`` (HEAD aside, which
    aiohttp adds to every GET). Raises :class:`Undocumented`."""
    routes = []
    for route in app.router.routes():
        if route.method == hdrs.METH_HEAD or route.resource is None:
            continue
        operation = _OPERATIONS.get(route.handler)
        path = route.resource.canonical
        if operation is None:
            raise Undocumented(f"{route.method} {path} has no @documented declaration")
        routes.append((route.method, path, operation))

    bodies = sorted(
        {t for _, _, op in routes for t in (*op.ok.values(), op.body) if t is not None}
        | {ErrorOut, *BATCH_ITEMS.values()},
        key=repr,
    )
    schemas, components = msgspec.json.schema_components(bodies, ref_template=REF_TEMPLATE)
    components.update(COMPONENTS)
    schema_of = dict(zip(bodies, schemas, strict=True))

    paths: dict[str, dict[str, Any]] = {}
    for method, path, operation in sorted(routes, key=lambda r: (r[1], r[0])):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, operation, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ledger",
            "version": importlib.metadata.version("ledger"),
            "description": (
                "An event-sourced, double-entry ledger. Amounts are decimal strings, never numbers. "
                "Every body is JSON or MessagePack (by Content-Type, and by Accept for responses); "
                f"every response carries {REQUEST_ID}. Errors have one shape, with a code."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token of LEDGER_TOKENS, with the scope the operation needs "
                    "(read, write or admin, which implies the others). Off when no tokens are configured.",
                }
            },
        },
    }


def _operation(method: str, path: str, op: Operation, schema_of: Mapping[Any, Any]) -> dict[str, Any]:
    scope = scope_of(method, path)
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
        for name in _PATH_PARAMETER.findall(path)
    ]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    description = op.description
    if scope is not None:
        description = f"{description}\n\nNeeds a token with the `{scope}` scope.".strip()
    found: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": op.summary,
        "description": description,
        "security": [{"bearer": []}] if scope is not None else [],
        "responses": _responses(op, parameters, scope, schema_of),
    }
    if parameters:
        found["parameters"] = parameters
    if op.body is not None:
        schema = schema_of[op.body]
        found["requestBody"] = {
            "required": op.body_required,
            "content": {media: {"schema": schema} for media in JSON_OR_MSGPACK},
        }
    return found


def _query_parameters(query: type) -> list[dict[str, Any]]:
    """A parameter for each field of ``query``, its schema msgspec's."""
    (ref,), components = msgspec.json.schema_components([query], ref_template=REF_TEMPLATE)
    struct = components[ref["$ref"].rsplit("/", 1)[1]]
    required = set(struct.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": schema}
        for name, schema in struct["properties"].items()
    ]


def _responses(
    op: Operation, parameters: list[dict[str, Any]], scope: str | None, schema_of: Mapping[Any, Any]
) -> dict[str, Any]:
    request_id = {REQUEST_ID: {"description": "The caller's request id, or a new one.", "schema": {"type": "string"}}}
    responses: dict[str, Any] = {}
    for status, type_ in sorted(op.ok.items()):
        headers = dict(request_id)
        description = op.says.get(status) or _STATUS_TEXT.get(status, "OK")
        if op.replays and status == 200:
            headers.update(
                {
                    name: {
                        "description": "An idempotent replay: nothing changed.",
                        "schema": {"type": "string", "enum": [value]},
                    }
                    for name, value in REPLAYED.items()
                }
            )
            description = "OK, or an idempotent replay of a request already decided (nothing changed)."
        if NDJSON in op.media:
            description = "A stream: one JSON object of this schema a line (an empty line now and then keeps it alive)."
        responses[str(status)] = {
            "description": description,
            "headers": headers,
            "content": {media: {"schema": schema_of[type_]} for media in op.media},
        }
    error = schema_of[ErrorOut]
    for status, codes in sorted(_error_codes(op, parameters, scope).items()):
        listed = ", ".join(f"`{code}`" for code in codes)
        if str(status) in responses:  # a body of its own, or an error
            both = responses[str(status)]
            both["description"] = f"{both['description']} Or an error: {listed}."
            for content in both["content"].values():
                content["schema"] = {"anyOf": [content["schema"], error]}
            continue
        responses[str(status)] = {
            "description": listed,
            "headers": request_id,
            "content": {media: {"schema": error} for media in JSON_OR_MSGPACK},
        }
    return responses


def _error_codes(op: Operation, parameters: list[dict[str, Any]], scope: str | None) -> dict[int, list[str]]:
    codes = list(op.errors)
    if scope is not None:
        codes += [Code.UNAUTHORIZED, Code.FORBIDDEN]
    if op.body is not None:
        codes += [Code.MALFORMED_BODY, Code.BODY_TOO_LARGE, Code.UNSUPPORTED_MEDIA_TYPE, Code.INVALID_FIELD]
    if parameters:
        codes.append(Code.INVALID_FIELD)
    if op.database:
        codes.append(Code.UNAVAILABLE)
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(status_of(code), []).append(str(code))
    return by_status


def _operation_id(method: str, path: str) -> str:
    """``POST /v1/transfers/{id}/post`` → ``post_v1_transfers_id_post``."""
    words = re.findall(r"[a-z0-9]+", path.lower().replace(".json", ""))
    return "_".join([method.lower(), *words])


routes = web.RouteTableDef()


@routes.get("/openapi.json")
@documented("This document", ok={200: dict[str, Any]}, database=False)
async def openapi(request: web.Request) -> web.Response:
    return respond(request, document(request.app))
