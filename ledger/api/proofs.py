"""``/v1/proofs``: RFC 9162 inclusion and consistency proofs of the log.

Both read the head, check the sizes asked for against it, then read the
O(log n) stored subtrees the proof is made of (:mod:`ledger.store.tree`),
on the primary: a proof must be of a tree no smaller than the checkpoint a
caller holds, and the primary has every tree a checkpoint was made of.
"""

from __future__ import annotations

import functools

from aiohttp import web
from msgspec import UNSET

from ..domain import merkle
from ..domain.codes import InvalidField
from ..store import tree
from ..store.head import read_head
from . import codec, filters
from .keys import POOL
from .openapi import documented
from .responses import ConsistencyProof, InclusionProof
from .schemas import ConsistencyQuery, InclusionQuery

routes = web.RouteTableDef()


def _within(value: int, head: int, field: str) -> None:
    if value > head:
        raise InvalidField(f"{field} is {value}, past the head of the log at seq {head}", field)


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
    async with request.app[POOL].acquire() as conn:
        head = (await read_head(conn)).seq
        size = head if query.tree_size is UNSET else query.tree_size
        _within(size, head, "tree_size")
        if query.seq > size:
            raise InvalidField(f"seq {query.seq} is not in a tree of {size} events", "seq")
        leaf, path = await tree.computed(conn, functools.partial(_inclusion, index, size))
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
    async with request.app[POOL].acquire() as conn:
        _within(query.second, (await read_head(conn)).seq, "second")
        proof = await tree.computed(conn, functools.partial(_consistency, query.first, query.second))
    return codec.respond(request, ConsistencyProof(query.first, query.second, [h.hex() for h in proof]))


def _inclusion(index: int, size: int, subtrees: merkle.Subtrees) -> tuple[bytes, list[bytes]]:
    return subtrees(0, index), merkle.inclusion_proof(index, size, subtrees)


def _consistency(first: int, second: int, subtrees: merkle.Subtrees) -> list[bytes]:
    return merkle.consistency_proof(first, second, subtrees)
