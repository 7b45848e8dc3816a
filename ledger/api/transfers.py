"""``/v1/transfers`` and ``/v1/transfer-batches``: move money, decide pending
transfers, read transfers."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiohttp import web

from ..domain.commands import Command, MakeTransfer, VoidTransfer
from ..domain.ledger import Existing, Outcome, Recorded, Refused
from ..domain.model import Transfer
from . import codec
from .execute import execute, execute_one
from .paths import transfer_in_path, uuid_param
from .schemas import BATCH_ITEMS, BatchIn, EmptyIn, ItemKind, PostIn, TransferIn, transfer_out

routes = web.RouteTableDef()


@routes.post("/v1/transfers")
async def create_transfer(request: web.Request) -> web.Response:
    """201 with the new transfer; 200 and ``Idempotent-Replayed`` on a replay."""
    body = await codec.decode(request, TransferIn)
    return await _decide(request, body.to_command(), created=201)


@routes.post("/v1/transfers/{id}/post")
async def post_transfer(request: web.Request) -> web.Response:
    """Post a pending transfer (all of it, or ``amount``); 200 with the transfer."""
    transfer_id = uuid_param(request)
    body = await codec.decode(request, PostIn, optional=True)
    return await _decide(request, body.to_command(transfer_id))


@routes.post("/v1/transfers/{id}/void")
async def void_transfer(request: web.Request) -> web.Response:
    """Release a pending transfer; 200 with the transfer."""
    transfer_id = uuid_param(request)
    await codec.decode(request, EmptyIn, optional=True)
    return await _decide(request, VoidTransfer(transfer_id))


async def _decide(request: web.Request, command: Command, *, created: int = 200) -> web.Response:
    """The transfer ``command`` left: ``created`` if it recorded an event,
    else 200 and ``Idempotent-Replayed`` (nothing changed)."""
    outcome = await execute_one(request, command)
    if isinstance(outcome, Recorded):
        return codec.respond(request, transfer_out(outcome.subject), status=created)
    return codec.respond(request, transfer_out(outcome.subject), headers=codec.REPLAYED)


@routes.get("/v1/transfers/{id}")
async def get_transfer(request: web.Request) -> web.Response:
    return codec.respond(request, transfer_out(await transfer_in_path(request)))


@routes.post("/v1/transfer-batches")
async def create_batch(request: web.Request) -> web.Response:
    """One result per item, in order. An atomic batch that fails is a 422."""
    body = await codec.decode(request, BatchIn)
    commands = await _commands(request, body.transfers)
    outcomes = await execute(request, commands, atomic=body.atomic)
    results = [_result(c, o) for c, o in zip(commands, outcomes, strict=True)]
    failed = body.atomic and any(isinstance(o, Refused) for o in outcomes)
    return codec.respond(request, {"results": results}, status=422 if failed else 200)


#: Batch items decoded between two turns of the event loop (about half a
#: millisecond): the 8190 of a full batch take some 20 ms, which the append
#: in flight would otherwise wait for at its next round trip.
DECODE_SLICE = 256


async def _commands(request: web.Request, raws: list[msgspec.Raw]) -> list[Command]:
    """Each item decoded as what its ``action`` says it is, as a command."""
    decode = codec.part_decoder(request)
    commands = []
    for index, raw in enumerate(raws):
        if index and not index % DECODE_SLICE:
            await asyncio.sleep(0)
        path = f"transfers[{index}]"
        kind = decode(raw, ItemKind, path)
        commands.append(decode(raw, BATCH_ITEMS[kind.action], path).to_command(f"{path}."))
    return commands


def _result(command: Command, outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Refused):
        return {"id": command.id, "error": {"code": str(outcome.code), "message": outcome.message}}
    assert isinstance(outcome, (Recorded, Existing)) and isinstance(outcome.subject, Transfer)
    if isinstance(outcome, Recorded):
        return {"id": command.id, "status": "created", "seq": outcome.record.seq}
    # An unchanged decision points at the event that decided the transfer.
    transfer = outcome.subject
    decided = None if isinstance(command, MakeTransfer) else transfer.decided_seq
    return {"id": command.id, "status": "exists", "seq": decided or transfer.seq}
