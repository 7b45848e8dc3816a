"""``/v1/accounts``: open, close, read and list accounts."""

from __future__ import annotations

from aiohttp import web

from ..domain.commands import CloseAccount
from ..domain.ledger import Recorded
from ..store import reads
from . import codec
from .execute import execute_one
from .keys import POOL
from .paths import account_in_path, uuid_param
from .schemas import AccountIn, AccountsQuery, EmptyIn, account_out

routes = web.RouteTableDef()


@routes.post("/v1/accounts")
async def create_account(request: web.Request) -> web.Response:
    """201 with a new account; 200 with the existing one on a same-id replay."""
    body = await codec.decode(request, AccountIn)
    outcome = await execute_one(request, body.to_command())
    status = 201 if isinstance(outcome, Recorded) else 200
    return codec.respond(request, account_out(outcome.subject), status=status)


@routes.post("/v1/accounts/{id}/close")
async def close_account(request: web.Request) -> web.Response:
    """200 with the closed account; closing a closed account changes nothing."""
    account_id = uuid_param(request)
    await codec.decode(request, EmptyIn, optional=True)
    outcome = await execute_one(request, CloseAccount(account_id))
    headers = None if isinstance(outcome, Recorded) else codec.REPLAYED
    return codec.respond(request, account_out(outcome.subject), headers=headers)


@routes.get("/v1/accounts/{id}")
async def get_account(request: web.Request) -> web.Response:
    return codec.respond(request, account_out(await account_in_path(request)))


@routes.get("/v1/accounts")
async def list_accounts(request: web.Request) -> web.Response:
    """Keyset pagination by id: pass the previous page's ``next`` as ``after``."""
    query = codec.convert(dict(request.query), AccountsQuery)
    # One more than asked for tells whether another page exists.
    page = await reads.list_accounts(
        request.app[POOL], currency=query.currency, after=query.after, limit=query.limit + 1
    )
    more = len(page) > query.limit
    page = page[: query.limit]
    return codec.respond(
        request,
        {
            "accounts": [account_out(a) for a in page],
            "next": str(page[-1].id) if more else None,
        },
    )
