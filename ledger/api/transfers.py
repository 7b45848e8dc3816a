"""``/v1/transfers`` and ``/v1/transfer-batches``: move money, read transfers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..domain.codes import Code, LedgerError
from ..domain.ledger import Existing, Outcome, Recorded, Refused
from ..store import reads
from . import codec
from .execute import execute, execute_one
from .keys import POOL
from .paths import uuid_param
from .schemas import BatchIn, TransferIn, transfer_out

routes = web.RouteTableDef()

REPLAYED = {"Idempotent-Replayed": "true"}


@routes.post("/v1/transfers")
async def create_transfer(request: web.Request) -> web.Response:
    """201 with the new transfer; 200 and ``Idempotent-Replayed`` on a replay."""
    body = await codec.decode(request, TransferIn)
    outcome = await execute_one(request, body.to_command())
    if isinstance(outcome, Recorded):
        return codec.respond(request, transfer_out(outcome.subject), status=201)
    return codec.respond(request, transfer_out(outcome.subject), headers=REPLAYED)


@routes.get("/v1/transfers/{id}")
async def get_transfer(request: web.Request) -> web.Response:
    transfer_id = uuid_param(request)
    transfer = await reads.get_transfer(request.app[POOL], transfer_id)
    if transfer is None:
        raise LedgerError(Code.TRANSFER_NOT_FOUND, f"transfer {transfer_id} does not exist")
    return codec.respond(request, transfer_out(transfer))


@routes.post("/v1/transfer-batches")
async def create_batch(request: web.Request) -> web.Response:
    """One result per item, in order. An atomic batch that fails is a 422."""
    body = await codec.decode(request, BatchIn)
    commands = body.to_commands()
    outcomes = await execute(request, commands, atomic=body.atomic)
    results = [_result(c.id, o) for c, o in zip(commands, outcomes, strict=True)]
    failed = body.atomic and any(isinstance(o, Refused) for o in outcomes)
    return codec.respond(request, {"results": results}, status=422 if failed else 200)


def _result(transfer_id: object, outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Refused):
        return {"id": str(transfer_id), "error": {"code": str(outcome.code), "message": outcome.message}}
    status = "created" if isinstance(outcome, Recorded) else "exists"
    assert isinstance(outcome, (Recorded, Existing))
    return {"id": str(transfer_id), "status": status, "seq": outcome.subject.seq}
