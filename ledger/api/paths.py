"""Path parameters."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from ..domain.codes import InvalidField


def uuid_param(request: web.Request, name: str = "id") -> UUID:
    """The path parameter ``name`` as a UUID, or 422 ``invalid_field``."""
    raw = request.match_info[name]
    try:
        return UUID(raw)
    except ValueError:
        raise InvalidField(f"{raw!r} is not a UUID", name) from None
