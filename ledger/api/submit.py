"""Submitting a request's commands to the write path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ..domain.codes import LedgerError
from ..domain.commands import Command
from ..domain.ledger import Existing, Outcome, Recorded, Refused
from ..store.write_path import AppendRequest
from .auth import caller
from .keys import COALESCER
from .middlewares import request_id


def event_metadata(request: web.Request) -> dict[str, Any]:
    """What the log records about who caused an event: the request id, and
    the calling token's name when authentication is on."""
    metadata: dict[str, Any] = {"request_id": request_id(request)}
    token = caller(request)
    if token is not None:
        metadata["token"] = token.name
    return metadata


async def submit(request: web.Request, commands: Sequence[Command], *, atomic: bool = False) -> list[Outcome]:
    """Submit ``commands`` for ``request`` to the write path; one outcome each,
    once they are decided and recorded."""
    [outcomes] = await request.app[COALESCER].submit(
        [AppendRequest(commands, atomic=atomic, metadata=event_metadata(request))]
    )
    return outcomes


async def submit_one(request: web.Request, command: Command) -> Recorded | Existing:
    """Like :func:`submit` for a single command; a refusal is raised as an error."""
    [outcome] = await submit(request, [command])
    if isinstance(outcome, Refused):
        raise LedgerError(outcome.code, outcome.message)
    return outcome
