"""Bodies in and out: JSON or MessagePack, by ``Content-Type`` and ``Accept``.

Decoding is strict: msgspec checks types, patterns and unknown fields, and
its complaint becomes a 422 ``invalid_field`` naming the field's path
(``transfers[3].amount``); a body that is not JSON/MessagePack at all is 400.
An object that gives a key twice is refused too (422): msgspec would keep
the last value, where another reader of the same bytes (a gateway, an audit
of the request) may keep the first.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack
import msgspec
import msgspec.inspect
from aiohttp import compression_utils, hdrs, web

from ..domain.codes import Code, InvalidField, LedgerError
from .errors import status_of
from .responses import error_out

T = TypeVar("T")

JSON = "application/json"
MSGPACK = "application/msgpack"
_MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})

#: Sent with a 200 that changed nothing: the request repeated one already decided.
REPLAYED = {"Idempotent-Replayed": "true"}

#: The content codings aiohttp undoes here (``identity`` being none; ``br``
#: and ``zstd`` where their decoders are installed); a body in another
#: would reach the decoder still encoded.
_CONTENT_CODINGS = frozenset(
    {"identity", "gzip", "deflate"}
    | ({"br"} if compression_utils.HAS_BROTLI else set())
    | ({"zstd"} if getattr(compression_utils, "HAS_ZSTD", False) else set())
)

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()

# msgspec ends a validation message with " - at `$.transfers[3].amount`".
_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_NAMED_FIELD = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<name>[^`]*)`")


async def decode(request: web.Request, type_: type[T], *, optional: bool = False) -> T:
    """The request body as ``type_``, or a :class:`LedgerError` saying why not.

    With ``optional``, an empty body (of any ``Content-Type``) is ``type_()``:
    every field's default.
    """
    coding = request.headers.get(hdrs.CONTENT_ENCODING)
    if coding is not None and coding.strip().lower() not in _CONTENT_CODINGS:
        raise LedgerError(
            Code.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Encoding {coding!r} is not supported: send the body as it is, or in one of "
            f"{', '.join(sorted(_CONTENT_CODINGS - {'identity'}))}",
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        raise LedgerError(Code.BODY_TOO_LARGE, f"the body is too large: {error.text}") from None
    except web.RequestPayloadError as error:
        # aiohttp could not undo the body's Content-Encoding.
        raise LedgerError(Code.MALFORMED_BODY, f"the body could not be read: {str(error).strip()}") from None
    except ConnectionResetError:
        # The client went away before its body ended. Nobody reads this
        # answer; it is what the access log and the metrics record.
        raise LedgerError(Code.MALFORMED_BODY, "the connection closed before the body ended") from None
    if optional and not body:
        return type_()
    decoder = _decoder(request)
    decoded = _decode(request, decoder, body, type_)
    _refuse_keys_given_twice(decoder is msgspec.json.decode, body)
    return decoded


def _refuse_keys_given_twice(is_json: bool, body: bytes) -> None:
    """Raise :class:`InvalidField` if an object of ``body`` (decoded already,
    so valid) gives a key twice.

    A JSON body whose colons are as many as its keys once decoded has none
    given twice (every key takes a colon, and a key given twice is counted
    once): most bodies pass so, for a decode without types. Any other, and
    every MessagePack body, is read again by a parser that sees each key
    (the standard library's, msgpack's)."""
    try:
        if is_json:
            if body.count(b":") == _key_count(msgspec.json.decode(body)):
                return
            json.loads(body, object_pairs_hook=_each_key_once)
        else:
            msgpack.unpackb(body, object_pairs_hook=_each_key_once, strict_map_key=False)
    except _GivenTwice as given:
        raise InvalidField(
            f"the key {given.key!r} is given twice in one object; give each field once", str(given.key)
        ) from None
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException):
        # What msgspec read but these cannot (a key that is not hashable,
        # nesting deeper than they go) is refused where it is decoded.
        pass


class _GivenTwice(Exception):
    def __init__(self, key: object) -> None:
        self.key = key


def _each_key_once(pairs: list[tuple[Any, Any]]) -> None:
    """An ``object_pairs_hook`` that raises :class:`_GivenTwice` for a key
    an object gives twice (the objects themselves are not needed)."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _GivenTwice(key)
        seen.add(key)


def _key_count(value: object) -> int:
    """The keys of every object in ``value`` (a decoded JSON document)."""
    if isinstance(value, dict):
        count = len(value)
        value = value.values()
    elif isinstance(value, list):
        count = 0
    else:
        return 0
    for item in value:
        if type(item) is dict or type(item) is list:
            count += _key_count(item)
    return count


def part_decoder(request: web.Request) -> Callable[[msgspec.Raw, type[T], str], T]:
    """``decode(raw, type_, path)`` for ``msgspec.Raw`` parts of the request
    body, in the body's format (looked up once); ``path`` (such as
    ``transfers[3]``) prefixes the field named in an error."""
    decode_ = _decoder(request)

    def decode(raw: msgspec.Raw, type_: type[T], path: str) -> T:
        try:
            return _decode(request, decode_, raw, type_)
        except InvalidField as error:
            error.field = f"{path}.{error.field}" if error.field else path
            raise

    return decode


def _decoder(request: web.Request) -> Callable[..., Any]:
    content_type = _content_type(request)
    if content_type == JSON:
        return msgspec.json.decode
    if content_type in _MSGPACK_TYPES:
        return msgspec.msgpack.decode
    raise LedgerError(
        Code.UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type {content_type!r} is not supported: send {JSON} or {MSGPACK}",
    )


def _content_type(request: web.Request) -> str:
    return request.content_type if hdrs.CONTENT_TYPE in request.headers else JSON


def _decode(request: web.Request, decode_: Callable[..., Any], data: bytes | msgspec.Raw, type_: type[T]) -> T:
    try:
        decoded: T = decode_(data, type=type_)
        return decoded
    except msgspec.ValidationError as error:
        raise invalid_field(str(error)) from None
    except msgspec.DecodeError as error:
        kind = "JSON" if _content_type(request) == JSON else "MessagePack"
        raise LedgerError(Code.MALFORMED_BODY, f"the body is not valid {kind}: {error}") from None
    except RecursionError:
        # msgspec counts nesting against the interpreter's recursion limit.
        raise LedgerError(Code.MALFORMED_BODY, "the body nests arrays and objects too deeply") from None


def convert(values: dict[str, str], type_: type[T]) -> T:
    """Query parameters (strings) as ``type_``, with the same errors as bodies.

    An integer is written in decimal digits without leading zeros (which
    msgspec refuses, saying only that it expected an integer) and a boolean
    as ``true`` or ``false``: converting text, msgspec would also read ``1e2``
    and ``1.0`` as integers and ``1`` or ``TRUE`` as true."""
    kinds = _STRICT_KINDS.get(type_)
    if kinds is None:
        kinds = _STRICT_KINDS[type_] = _strict_kinds(type_)
    for name, kind in kinds.items():
        value = values.get(name)
        if value is None:
            continue
        if kind is int and not _INTEGER.fullmatch(value):
            raise InvalidField(f"expected an integer in decimal digits without leading zeros, got {value!r}", name)
        if kind is bool and value not in ("true", "false"):
            raise InvalidField(f"expected true or false, got {value!r}", name)
    try:
        return msgspec.convert(values, type_, strict=False)
    except msgspec.ValidationError as error:
        raise invalid_field(str(error)) from None


_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
#: :func:`_strict_kinds` of each query struct, once found.
_STRICT_KINDS: dict[type, dict[str, type]] = {}


def _strict_kinds(type_: type) -> dict[str, type]:
    """The parameters of query struct ``type_`` that are integers or booleans."""
    kinds: dict[str, type] = {}
    for field in msgspec.inspect.type_info(type_).fields:  # type: ignore[attr-defined]
        kind = field.type
        while isinstance(kind, msgspec.inspect.Metadata):  # a type annotated with a description
            kind = kind.type
        if isinstance(kind, msgspec.inspect.IntType):
            kinds[field.encode_name] = int
        elif isinstance(kind, msgspec.inspect.BoolType):
            kinds[field.encode_name] = bool
    return kinds


def invalid_field(message: str) -> InvalidField:
    """msgspec's message as an ``invalid_field`` error with the field's path."""
    at = _AT_PATH.search(message)
    # msgspec spells an object's key it does not name as "[...]"
    # (`metadata[...][...]`): the path is named as far as it is known.
    path = at["path"].partition("[...]")[0] if at else ""
    message = message[: at.start()] if at else message
    named = _NAMED_FIELD.match(message)
    if named:
        path = f"{path}.{named['name']}" if path else named["name"]
    if path.endswith("amount") and message.startswith("Expected `str`"):
        message += ': amounts are decimal strings such as "12.50"'
    return InvalidField(message, path or None)


def respond(
    request: web.Request,
    payload: Any,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """``payload`` encoded as the request's ``Accept`` asks (MessagePack, else JSON)."""
    if _accepts_msgpack(request.headers.get(hdrs.ACCEPT, "")):
        body, content_type = _msgpack_encoder.encode(payload), MSGPACK
    else:
        body, content_type = _json_encoder.encode(payload), JSON
    return web.Response(body=body, status=status, content_type=content_type, headers=headers)


#: The media ranges that take in JSON, the most specific first.
_JSON_RANGES = (JSON, "application/*", "*/*")


@functools.lru_cache(maxsize=256)
def _accepts_msgpack(accept: str) -> bool:
    """Whether an ``Accept`` header asks for MessagePack: names it (any
    case) with a weight above 0 and no lower than JSON's, which is the weight
    of the most specific range that takes in JSON (``application/json``, else
    ``application/*``, else ``*/*``; RFC 9110, 12.5.1). A weight that is not
    a number from 0 to 1 counts as 1. JSON is the answer otherwise.
    Remembered: a client sends the same header with every request."""
    weights: dict[str, float] = {}
    for media_range in accept.split(","):
        media, *parameters = (part.strip().lower() for part in media_range.split(";"))
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                with contextlib.suppress(ValueError):
                    if 0 <= (given := float(value)) <= 1:
                        weight = given
        weights[media] = max(weights.get(media, 0.0), weight)
    msgpack = max(weights.get(media, 0.0) for media in _MSGPACK_TYPES)
    json = next((weights[media] for media in _JSON_RANGES if media in weights), 0.0)
    return msgpack > 0 and msgpack >= json


def error_response(request: web.Request, error: LedgerError, headers: dict[str, str] | None = None) -> web.Response:
    return respond(
        request,
        error_out(str(error.code), error.message, error.field),
        status=status_of(error.code),
        headers=headers,
    )
