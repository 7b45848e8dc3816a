"""Path parameters: ids, and the accounts and transfers they name."""

from __future__ import annotations

from uuid import UUID

import msgspec
from aiohttp import web

from ..domain.codes import Code, InvalidField, LedgerError
from ..domain.model import Account, Transfer
from ..store import reads
from .pool import read_connection


def uuid_param(request: web.Request, name: str = "id") -> UUID:
    """The path parameter ``name`` as a UUID, spelled as a body or a query
    may spell one (hyphenated, or 32 hex digits; not in braces or as a URN),
    or 422 ``invalid_field``."""
    raw = request.match_info[name]
    try:
        return msgspec.convert(raw, UUID)
    except msgspec.ValidationError:
        raise InvalidField(f"{raw!r} is not a UUID", name) from None


async def account_in_path(request: web.Request) -> Account:
    """The account the path's ``id`` names, or 404 ``account_not_found``."""
    account_id = uuid_param(request)
    async with read_connection(request) as conn:
        account = await reads.get_account(conn, account_id)
    if account is None:
        raise LedgerError(Code.ACCOUNT_NOT_FOUND, f"account {account_id} does not exist")
    return account


async def transfer_in_path(request: web.Request) -> Transfer:
    """The transfer the path's ``id`` names, or 404 ``transfer_not_found``."""
    transfer_id = uuid_param(request)
    async with read_connection(request) as conn:
        transfer = await reads.get_transfer(conn, transfer_id)
    if transfer is None:
        raise LedgerError(Code.TRANSFER_NOT_FOUND, f"transfer {transfer_id} does not exist")
    return transfer
