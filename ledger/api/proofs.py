"""``/v1/proofs``: RFC 9162 inclusion and consistency proofs of the log.

Both read the head, check the sizes asked for against it, then read the
O(log n) stored subtrees the proof is made of (:mod:`ledger.store.tree`),
where long reads go (the replica, when there is one: a size it has yet to
replay is 503 ``unavailable`` with ``Retry-After``, not 422).
"""

from __future__ import annotations

from aiohttp import web
from msgspec import UNSET, UnsetType

from ..domain.codes import InvalidField
from ..store import tree
from ..store.connection import Conn
from ..store.head import read_head
from . import codec, filters
from .openapi import documented
from .responses import ConsistencyProof, InclusionProof
from .schemas import ConsistencyQuery, InclusionQuery
from .streams import refuse_past_head, stream_connection

routes = web.RouteTableDef()


async def _tree_size(request: web.Request, conn: Conn, size: int | UnsetType, field: str) -> int:
    """The tree size ``size`` given as ``field`` (the head's if not given),
    refused past the head ``conn`` sees."""
    head = (await read_head(conn)).seq
    if size is UNSET:
        return head
    if size > head:
        await refuse_past_head(request, size, head, field)
    return size


@routes.get("/v1/proofs/inclusion")
@documented(
    "That an event is in the log: its leaf's audit path in a tree of the log (RFC 9162 2.1.3)",
    ok={200: InclusionProof},
    query=InclusionQuery,
    description="`seq <= tree_size <= head`; `tree_size` is the head if not given.",
)
async def inclusion(request: web.Request) -> web.Response:
    query = filters.parse_plain(request, InclusionQuery)
    index = query.seq - 1
    async with stream_connection(request, within=True) as conn:
        size = await _tree_size(request, conn, query.tree_size, "tree_size")
        if query.seq > size:
            raise InvalidField(f"seq {query.seq} is not in a tree of {size} events", "seq")
        leaf, path = await tree.inclusion(conn, index, size)
    return codec.respond(request, InclusionProof(query.seq, index, size, leaf.hex(), [h.hex() for h in path]))


@routes.get("/v1/proofs/consistency")
@documented(
    "That the log only grew: the tree of `first` events is a prefix of the tree of `second` (RFC 9162 2.1.4)",
    ok={200: ConsistencyProof},
    query=ConsistencyQuery,
    description="`1 <= first <= second <= head`.",
)
async def consistency(request: web.Request) -> web.Response:
    query = filters.parse_plain(request, ConsistencyQuery)
    if query.first > query.second:
        raise InvalidField(f"first ({query.first}) is past second ({query.second})", "first")
    async with stream_connection(request, within=True) as conn:
        await _tree_size(request, conn, query.second, "second")
        proof = await tree.consistency(conn, query.first, query.second)
    return codec.respond(request, ConsistencyProof(query.first, query.second, [h.hex() for h in proof]))
