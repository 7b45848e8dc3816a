"""Query strings of the endpoints that find things: their filters, the
``metadata.<key>=<value>`` ones among them, and the opaque cursor that
carries a page's position.

A cursor holds the position after which the next page starts and a digest
of the filters it was made for: reusing it with other filters (or another
order) is refused rather than answered with a page that skips or repeats
rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated, TypeVar

import msgspec
from aiohttp import web

from ..domain.codes import InvalidField
from ..store.tables import MAX_BIGINT
from . import codec

T = TypeVar("T")

METADATA_PREFIX = "metadata."
#: Parameters that move through pages of one query, not part of it.
_PAGING = frozenset({"cursor", "limit"})
#: What a metadata filter's value may be at most, as the metadata it looks into.
_MAX_METADATA_VALUE = 1024

#: Said of the endpoints that take metadata filters, in their documentation.
METADATA_FILTERS = (
    "Besides the parameters listed, `metadata.<key>=<value>` matches objects whose "
    "metadata holds that string value at that top-level key; several are ANDed."
)


def parse(request: web.Request, type_: type[T]) -> tuple[T, dict[str, str]]:
    """The query string as ``type_``, and its metadata filters (key: value).

    Every parameter may be given once; an unknown one, a malformed value, or
    a metadata filter without a key is 422 ``invalid_field`` naming it."""
    values: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for name, value in _given_once(request).items():
        if name.startswith(METADATA_PREFIX):
            key = name.removeprefix(METADATA_PREFIX)
            if not key:
                raise InvalidField("a metadata filter names its key: metadata.<key>=<value>", name)
            if "\x00" in key:
                raise InvalidField("no metadata holds such a key", name)
            if len(value) > _MAX_METADATA_VALUE or "\x00" in value:
                raise InvalidField("no metadata holds such a value", name)
            metadata[key] = value
        else:
            values[name] = value
    return codec.convert(values, type_), metadata


def parse_plain(request: web.Request, type_: type[T]) -> T:
    """The query string as ``type_``, which takes no metadata filters; the
    same errors as :func:`parse`."""
    return codec.convert(_given_once(request), type_)


def _given_once(request: web.Request) -> dict[str, str]:
    """Each parameter's value; 422 ``invalid_field`` for one given twice."""
    values: dict[str, str] = {}
    for name in request.query:
        given = request.query.getall(name)
        if len(given) > 1:
            raise InvalidField(f"{name} is given {len(given)} times; give it once", name)
        values[name] = given[0]
    return values


def digest(request: web.Request) -> str:
    """What a cursor is bound to: every parameter of the query but the paging ones."""
    query = sorted((k, v) for k, v in request.query.items() if k not in _PAGING)
    return hashlib.sha256(msgspec.json.encode(query)).hexdigest()[:32]


def make_cursor(seq: int, bound_to: str) -> str:
    """An opaque cursor for the page after ``seq``, for the query ``bound_to``."""
    return base64.urlsafe_b64encode(msgspec.json.encode([seq, bound_to])).decode().rstrip("=")


#: A seq as a cursor holds it: one the log's ``bigint`` can hold.
_Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_BIGINT)]


def cursor_seq(cursor: str | None, bound_to: str) -> int | None:
    """The seq a ``cursor`` holds (None: the first page); 422 if the cursor
    is not one this service made, or was made for another query."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        seq, made_for = msgspec.json.decode(raw, type=tuple[_Seq, str])
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidField("not a cursor of this service: pass the `next` of the page before", "cursor") from None
    if made_for != bound_to:
        raise InvalidField("this cursor was made for other filters: page with the same ones", "cursor")
    return seq
