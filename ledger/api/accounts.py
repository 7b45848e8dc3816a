"""``/v1/accounts``: open, close, read and list accounts."""

from __future__ import annotations

from aiohttp import web

from ..domain.codes import Code
from ..domain.commands import CloseAccount
from ..domain.ledger import Existing, Recorded
from ..domain.model import Account
from ..store import queries
from ..store.queries import AccountFilter
from . import codec, filters
from .openapi import documented
from .paths import account_in_path, uuid_param
from .pool import read_connection
from .responses import AccountOut, AccountPage, account_out
from .schemas import AccountIn, AccountsQuery, EmptyIn, given
from .submit import submit_one

routes = web.RouteTableDef()


@routes.post("/v1/accounts")
@documented(
    "Open an account",
    ok={201: AccountOut, 200: AccountOut},
    body=AccountIn,
    errors=(Code.EXISTS_WITH_DIFFERENT_FIELDS,),
    says={200: "The same id again with the same fields: the existing account, unchanged."},
)
async def create_account(request: web.Request) -> web.Response:
    """201 with a new account; 200 with the existing one on a same-id replay."""
    body = await codec.decode(request, AccountIn)
    outcome = await submit_one(request, body.to_command())
    status = 201 if isinstance(outcome, Recorded) else 200
    return codec.respond(request, account_out(_account(outcome)), status=status)


@routes.post("/v1/accounts/{id}/close")
@documented(
    "Close an account",
    ok={200: AccountOut},
    body=EmptyIn,
    body_required=False,
    replays=True,
    errors=(Code.ACCOUNT_NOT_FOUND, Code.ACCOUNT_HAS_PENDING),
    description="From then on a transfer that touches it is refused (`account_closed`).",
)
async def close_account(request: web.Request) -> web.Response:
    """200 with the closed account; closing a closed account changes nothing."""
    account_id = uuid_param(request)
    await codec.decode(request, EmptyIn, optional=True)
    outcome = await submit_one(request, CloseAccount(account_id))
    headers = None if isinstance(outcome, Recorded) else codec.REPLAYED
    return codec.respond(request, account_out(_account(outcome)), headers=headers)


def _account(outcome: Recorded | Existing) -> Account:
    account = outcome.subject
    assert isinstance(account, Account)  # an account command's subject
    return account


@routes.get("/v1/accounts/{id}")
@documented("An account, its balances current", ok={200: AccountOut}, errors=(Code.ACCOUNT_NOT_FOUND,))
async def get_account(request: web.Request) -> web.Response:
    return codec.respond(request, account_out(await account_in_path(request)))


@routes.get("/v1/accounts")
@documented(
    "Accounts matching every filter given, a page at a time (keyset by id)",
    ok={200: AccountPage},
    query=AccountsQuery,
    description=filters.METADATA_FILTERS,
)
async def list_accounts(request: web.Request) -> web.Response:
    """Keyset pagination by id: pass the previous page's ``next`` as ``after``."""
    query, metadata = filters.parse(request, AccountsQuery)
    found = AccountFilter(currency=given(query.currency), closed=given(query.closed), metadata=metadata)
    # One more than asked for tells whether another page exists.
    async with read_connection(request) as conn:
        page = await queries.find_accounts(conn, found, after=given(query.after), limit=query.limit + 1)
    more = len(page) > query.limit
    page = page[: query.limit]
    return codec.respond(
        request, AccountPage(accounts=[account_out(a) for a in page], next=page[-1].id if more else None)
    )
