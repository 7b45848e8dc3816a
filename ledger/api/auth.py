"""Bearer tokens and their scopes.

Reads (GET) need ``read``, every other method under ``/v1`` needs ``write``,
``/admin`` needs ``admin`` (which implies the others). Health endpoints are
open, so that load balancers need no secret, and so is ``/openapi.json``. Secrets are compared in constant
time, against every configured token, so timing tells nothing about them.
"""

from __future__ import annotations

import hmac

from aiohttp import hdrs, web

from ..config import Token
from ..domain.codes import Code, LedgerError
from .keys import SETTINGS
from .middlewares import Handler

TOKEN_KEY = web.RequestKey("token", Token)

_OPEN_PREFIXES = ("/health/",)
#: Served to anyone: what a client generator or gateway reads first.
_OPEN_PATHS = frozenset({"/openapi.json"})


def caller(request: web.Request) -> Token | None:
    """The token ``request`` was let in with; None for an open endpoint, and
    for every request when no tokens are configured."""
    # Asked only of a service with tokens: a request's get() of a key it
    # lacks raises and catches a KeyError, on every write.
    return request.get(TOKEN_KEY) if request.app[SETTINGS].tokens else None


def scope_of(method: str, path: str) -> str | None:
    """The scope a request to ``path`` needs; None: it needs no token."""
    if path.startswith(_OPEN_PREFIXES) or path in _OPEN_PATHS:
        return None
    if path.startswith("/admin"):
        return "admin"
    return "read" if method in (hdrs.METH_GET, hdrs.METH_HEAD) else "write"


def find_token(tokens: tuple[Token, ...], secret: str) -> Token | None:
    found = None
    given = secret.encode()
    for token in tokens:
        # No early exit: every token is compared, whichever matches.
        if hmac.compare_digest(token.secret.encode(), given):
            found = token
    return found


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a request without a token that has the scope it needs. (The
    app has it only when tokens are configured: see
    :func:`ledger.api.app.create_app`.)"""
    tokens = request.app[SETTINGS].tokens
    scope = scope_of(request.method, request.path)
    if scope is None:
        return await handler(request)
    scheme, _, secret = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    token = find_token(tokens, secret.strip()) if scheme.lower() == "bearer" else None
    if token is None:
        raise LedgerError(Code.UNAUTHORIZED, "send Authorization: Bearer <token> with a known token")
    if not token.allows(scope):
        raise LedgerError(Code.FORBIDDEN, f"token {token.name!r} lacks the {scope!r} scope")
    request[TOKEN_KEY] = token
    return await handler(request)
