"""``/v1/transfers`` and ``/v1/transfer-batches``: move money, decide pending
transfers, read transfers."""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web

from ..domain.codes import Code
from ..domain.commands import Command, MakeTransfer, ReverseTransfer, VoidTransfer
from ..domain.ledger import Existing, Outcome, Recorded, Refused
from ..domain.model import Transfer
from ..store import queries
from ..store.queries import TransferFilter
from . import codec, filters
from .openapi import documented
from .paths import transfer_in_path, uuid_param
from .pool import read_connection
from .responses import BatchItemError, BatchItemOut, BatchOut, TransferOut, TransferPage, transfer_out
from .schemas import (
    BATCH_ITEMS,
    BatchIn,
    EmptyIn,
    ItemKind,
    PostIn,
    ReverseIn,
    TransferIn,
    TransfersQuery,
    given,
    instant,
)
from .submit import submit, submit_one

routes = web.RouteTableDef()

#: What deciding a new transfer may refuse it with.
MAKE_TRANSFER_ERRORS = (
    Code.EXISTS_WITH_DIFFERENT_FIELDS,
    Code.DEBIT_ACCOUNT_NOT_FOUND,
    Code.CREDIT_ACCOUNT_NOT_FOUND,
    Code.ACCOUNTS_MUST_BE_DIFFERENT,
    Code.CURRENCY_MISMATCH,
    Code.AMOUNT_MUST_BE_POSITIVE,
    Code.AMOUNT_SCALE_EXCEEDED,
    Code.EXCEEDS_CREDITS,
    Code.EXCEEDS_DEBITS,
    Code.ACCOUNT_CLOSED,
)
#: What posting or voiding a pending transfer may refuse it with.
DECIDE_ERRORS = (
    Code.TRANSFER_NOT_FOUND,
    Code.TRANSFER_ALREADY_POSTED,
    Code.TRANSFER_ALREADY_VOIDED,
    Code.TRANSFER_EXPIRED,
    Code.ACCOUNT_CLOSED,
)


@routes.post("/v1/transfers")
@documented(
    "Move money between two accounts (at once, or held as pending)",
    ok={201: TransferOut, 200: TransferOut},
    body=TransferIn,
    replays=True,
    errors=MAKE_TRANSFER_ERRORS,
)
async def create_transfer(request: web.Request) -> web.Response:
    """201 with the new transfer; 200 and ``Idempotent-Replayed`` on a replay."""
    body = await codec.decode(request, TransferIn)
    return await _transfer_response(request, body.to_command(), created=201)


@routes.post("/v1/transfers/{id}/post")
@documented(
    "Post a pending transfer: all of it, or `amount` of it",
    ok={200: TransferOut},
    body=PostIn,
    body_required=False,
    replays=True,
    errors=(*DECIDE_ERRORS, Code.POST_AMOUNT_EXCEEDS_PENDING, Code.AMOUNT_MUST_BE_POSITIVE, Code.AMOUNT_SCALE_EXCEEDED),
)
async def post_transfer(request: web.Request) -> web.Response:
    """Post a pending transfer (all of it, or ``amount``); 200 with the transfer."""
    transfer_id = uuid_param(request)
    body = await codec.decode(request, PostIn, optional=True)
    return await _transfer_response(request, body.to_command(transfer_id))


@routes.post("/v1/transfers/{id}/void")
@documented(
    "Void a pending transfer: release what it holds",
    ok={200: TransferOut},
    body=EmptyIn,
    body_required=False,
    replays=True,
    errors=DECIDE_ERRORS,
)
async def void_transfer(request: web.Request) -> web.Response:
    """Release a pending transfer; 200 with the transfer."""
    transfer_id = uuid_param(request)
    await codec.decode(request, EmptyIn, optional=True)
    return await _transfer_response(request, VoidTransfer(transfer_id))


#: What reversing a transfer may refuse it with.
REVERSE_ERRORS = (
    Code.TRANSFER_NOT_FOUND,
    Code.TRANSFER_NOT_POSTED,
    Code.REVERSAL_EXCEEDS_AMOUNT,
    Code.EXISTS_WITH_DIFFERENT_FIELDS,
    Code.AMOUNT_MUST_BE_POSITIVE,
    Code.AMOUNT_SCALE_EXCEEDED,
    Code.EXCEEDS_CREDITS,
    Code.EXCEEDS_DEBITS,
    Code.ACCOUNT_CLOSED,
)


@routes.post("/v1/transfers/{id}/reverse")
@documented(
    "Reverse a posted transfer, all of what is left or `amount` of it, as a new posted transfer",
    ok={201: TransferOut, 200: TransferOut},
    body=ReverseIn,
    replays=True,
    errors=REVERSE_ERRORS,
)
async def reverse_transfer(request: web.Request) -> web.Response:
    """201 with the reversal; 200 and ``Idempotent-Replayed`` on a replay of its id."""
    original_id = uuid_param(request)
    body = await codec.decode(request, ReverseIn)
    return await _transfer_response(request, body.to_command(original_id), created=201)


async def _transfer_response(request: web.Request, command: Command, *, created: int = 200) -> web.Response:
    """The transfer ``command`` left: ``created`` if it recorded an event,
    else 200 and ``Idempotent-Replayed`` (nothing changed)."""
    outcome = await submit_one(request, command)
    transfer = outcome.subject
    assert isinstance(transfer, Transfer)  # a transfer command's subject
    if isinstance(outcome, Recorded):
        return codec.respond(request, transfer_out(transfer), status=created)
    return codec.respond(request, transfer_out(transfer), headers=codec.REPLAYED)


@routes.get("/v1/transfers")
@documented(
    "Transfers matching every filter given, a page at a time, in the order they were created",
    ok={200: TransferPage},
    query=TransfersQuery,
    description=filters.METADATA_FILTERS,
)
async def find_transfers(request: web.Request) -> web.Response:
    """A page of transfers; ``next`` is the cursor of the page after it."""
    query, metadata = filters.parse(request, TransfersQuery)
    bound_to = filters.digest(request)
    found = TransferFilter(
        account_id=given(query.account_id),
        debit_account_id=given(query.debit_account_id),
        credit_account_id=given(query.credit_account_id),
        code=given(query.code),
        currency=given(query.currency),
        status=given(query.status),
        created_from=instant(query.created_from, "created_from"),
        created_to=instant(query.created_to, "created_to"),
        reverses=given(query.reverses),
        metadata=metadata,
    )
    # One more than asked for tells whether another page exists.
    async with read_connection(request) as conn:
        page = await queries.find_transfers(
            conn,
            found,
            after_seq=filters.cursor_seq(given(query.cursor), bound_to),
            descending=query.order == "desc",
            limit=query.limit + 1,
        )
    more = len(page) > query.limit
    page = page[: query.limit]
    next_ = filters.make_cursor(page[-1].seq, bound_to) if more else None
    return codec.respond(request, TransferPage(transfers=[transfer_out(t) for t in page], next=next_))


@routes.get("/v1/transfers/{id}")
@documented("A transfer", ok={200: TransferOut}, errors=(Code.TRANSFER_NOT_FOUND,))
async def get_transfer(request: web.Request) -> web.Response:
    return codec.respond(request, transfer_out(await transfer_in_path(request)))


@routes.post("/v1/transfer-batches")
@documented(
    "Up to 8190 transfers, posts, voids and reversals, decided in order; with `atomic`, all or none",
    ok={200: BatchOut, 422: BatchOut},
    body=BatchIn,
    says={
        200: "One result per item, in order: `created` or `exists` with its seq, or an error.",
        422: (
            "An atomic batch that failed: nothing was recorded; the item at fault has its error,"
            " every other item `linked_transfer_failed`."
        ),
    },
)
async def create_batch(request: web.Request) -> web.Response:
    """One result per item, in order. An atomic batch that fails is a 422."""
    body = await codec.decode(request, BatchIn)
    commands = await _commands(request, body.transfers)
    outcomes = await submit(request, commands, atomic=body.atomic)
    results = [_result(c, o) for c, o in zip(commands, outcomes, strict=True)]
    failed = body.atomic and any(isinstance(o, Refused) for o in outcomes)
    return codec.respond(request, BatchOut(results=results), status=422 if failed else 200)


#: Batch items decoded between two turns of the event loop, so that decoding
#: a full batch never holds the loop long: the append in flight waits for the
#: loop at each of its round trips (docs/performance.md).
DECODE_SLICE = 256


async def _commands(request: web.Request, raws: list[msgspec.Raw]) -> list[Command]:
    """Each item decoded as what its ``action`` says it is, as a command."""
    decode = codec.part_decoder(request)
    commands: list[Command] = []
    for index, raw in enumerate(raws):
        if index and not index % DECODE_SLICE:
            await asyncio.sleep(0)
        path = f"transfers[{index}]"
        kind = decode(raw, ItemKind, path)
        commands.append(decode(raw, BATCH_ITEMS[kind.action], path).to_command(path=f"{path}."))
    return commands


def _result(command: Command, outcome: Outcome) -> BatchItemOut:
    if isinstance(outcome, Refused):
        return BatchItemOut(id=command.id, error=BatchItemError(code=str(outcome.code), message=outcome.message))
    assert isinstance(outcome, (Recorded, Existing)) and isinstance(outcome.subject, Transfer)
    if isinstance(outcome, Recorded):
        return BatchItemOut(id=command.id, status="created", seq=outcome.record.seq)
    # An unchanged decision points at the event that decided the transfer.
    transfer = outcome.subject
    decided = None if isinstance(command, (MakeTransfer, ReverseTransfer)) else transfer.decided_seq
    return BatchItemOut(id=command.id, status="exists", seq=decided or transfer.seq)
