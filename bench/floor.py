"""aiohttp alone: the floor under the service's single-transfer POSTs.

    python -m bench.floor          # serves on LEDGER_PORT (default 8080)

One route takes ``POST /v1/transfers``, reads the body and answers 201 with
a transfer as the service encodes it (the same bytes for every request);
``GET /health/ready`` answers 200. It runs as ``ledger serve`` does (uvloop
when installed, no access log), so that what the service spends beyond it
is the ledger's own: decoding, deciding, writing, logging and metrics.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
from aiohttp import web

from ledger.api.responses import transfer_out
from ledger.domain.model import Transfer, TransferStatus

#: What the service answers a new transfer with, byte for byte in size.
ANSWER = msgspec.json.encode(
    transfer_out(
        Transfer(
            id=uuid.uuid4(),
            debit_account_id=uuid.uuid4(),
            credit_account_id=uuid.uuid4(),
            amount=Decimal("1.00"),
            currency="USD",
            code=None,
            metadata={},
            pending=False,
            timeout_seconds=None,
            status=TransferStatus.POSTED,
            seq=1_000_000,
            created_at=datetime.now(UTC),
        )
    )
)


async def create_transfer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, status=201, content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/transfers", create_transfer)
    app.router.add_get("/health/ready", ready)
    return app


def main() -> None:
    try:
        import uvloop
    except ImportError:
        loop = None
    else:
        loop = uvloop.new_event_loop()
    web.run_app(create_app(), port=int(os.environ.get("LEDGER_PORT", "8080")), access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
