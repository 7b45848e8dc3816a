"""Handing a request's commands to the writer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ..domain.codes import LedgerError
from ..domain.commands import Command
from ..domain.ledger import Existing, Outcome, Recorded, Refused
from ..store.append import AppendRequest
from .auth import TOKEN_KEY
from .keys import COALESCER
from .middlewares import request_id


def event_metadata(request: web.Request) -> dict[str, Any]:
    """What the log records about who caused an event: the request id, and
    the calling token's name when authentication is on."""
    metadata: dict[str, Any] = {"request_id": request_id(request)}
    token = request.get(TOKEN_KEY)
    if token is not None:
        metadata["token"] = token.name
    return metadata


async def execute(request: web.Request, commands: Sequence[Command], *, atomic: bool = False) -> list[Outcome]:
    """Decide and record ``commands`` for ``request``; one outcome each."""
    [outcomes] = await request.app[COALESCER].append(
        [AppendRequest(commands, atomic=atomic, metadata=event_metadata(request))]
    )
    return outcomes


async def execute_one(request: web.Request, command: Command) -> Recorded | Existing:
    """Like :func:`execute` for a single command; a refusal is raised as an error."""
    [outcome] = await execute(request, [command])
    if isinstance(outcome, Refused):
        raise LedgerError(outcome.code, outcome.message)
    return outcome
