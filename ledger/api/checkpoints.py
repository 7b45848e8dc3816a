"""``/v1/checkpoint`` and ``/v1/checkpoint/key``: the log's signed checkpoints.

A checkpoint is a C2SP ``tlog-checkpoint`` (https://c2sp.org/tlog-checkpoint):
the log's origin, its tree size and its root hash in base64, one a line,
signed as a C2SP signed note (:mod:`ledger.signing`). Signing costs more
than any read, so a process signs at most once per :data:`MAX_AGE`: a
checkpoint served is at most that old, and its tree size is the head when
it was made.
"""

from __future__ import annotations

import asyncio
import base64
import time

import asyncpg
from aiohttp import web

from ..domain.codes import Code, LedgerError
from ..signing import NoteSigner
from ..store.tree import read_tip
from .keys import CHECKPOINTS
from .openapi import documented

routes = web.RouteTableDef()

#: Seconds a signed checkpoint is served before a new one is made.
MAX_AGE = 1.0


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    """The note text of a checkpoint: origin, tree size, base64 root hash."""
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


class Checkpoints:
    """The latest signed checkpoint of the log, made anew when older than
    :data:`MAX_AGE`; one signing at a time, whoever else asks meanwhile
    waits for it. The signing, and a connection of ``pool``, are each waited
    for at most ``wait`` seconds (:class:`TimeoutError`)."""

    def __init__(self, signer: NoteSigner, pool: asyncpg.Pool, *, wait: float) -> None:
        self.signer = signer
        self._pool = pool
        self._wait = wait
        self._lock = asyncio.Lock()
        self._latest = ""
        self._made = -MAX_AGE

    async def latest(self) -> str:
        if time.monotonic() - self._made < MAX_AGE:
            return self._latest
        async with asyncio.timeout(self._wait):
            await self._lock.acquire()
        try:
            if time.monotonic() - self._made >= MAX_AGE:
                made = time.monotonic()
                async with self._pool.acquire(timeout=self._wait) as conn:
                    head, tree = await read_tip(conn)
                self._latest = self.signer.sign(checkpoint_text(self.signer.name, head.seq, tree.root()))
                self._made = made
        finally:
            self._lock.release()
        return self._latest


def _checkpoints(request: web.Request) -> Checkpoints:
    checkpoints = request.app[CHECKPOINTS]
    if checkpoints is None:
        raise LedgerError(
            Code.NO_SIGNING_KEY,
            "this service has no signing key (LEDGER_SIGNING_KEY_FILE), so it signs no checkpoints; "
            "proofs are served all the same",
        )
    return checkpoints


@routes.get("/v1/checkpoint")
@documented(
    "The log's latest signed checkpoint (C2SP tlog-checkpoint, signed note, Ed25519), at most 1 s old",
    ok={200: str},
    media=("text/plain",),
    errors=(Code.NO_SIGNING_KEY,),
)
async def checkpoint(request: web.Request) -> web.Response:
    return web.Response(text=await _checkpoints(request).latest(), content_type="text/plain")


@routes.get("/v1/checkpoint/key")
@documented(
    "The note verifier key of the checkpoints' signatures: `<origin>+<hex key id>+<base64(0x01 || public key)>`",
    ok={200: str},
    media=("text/plain",),
    errors=(Code.NO_SIGNING_KEY,),
    database=False,
)
async def checkpoint_key(request: web.Request) -> web.Response:
    return web.Response(text=_checkpoints(request).signer.verifier_key + "\n", content_type="text/plain")
