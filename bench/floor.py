"""aiohttp alone: the floor under the service's single-transfer POSTs.

    python -m bench.floor          # serves on LEDGER_HOST:LEDGER_PORT, as ledger serve

One route takes ``POST /v1/transfers``, reads the body and answers 201 with
a transfer as the service encodes it (the same bytes for every request);
``GET /health/ready`` answers 200. It runs as one worker of ``ledger serve``
does, through the same code (its socket on LEDGER_HOST, the event loop
``LEDGER_UVLOOP`` asks for, the garbage collector's thresholds), without an
access log, so that what the service spends beyond it is the ledger's own:
decoding, deciding, writing, logging, metrics and the request id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
from aiohttp import web

from ledger import serving
from ledger.api.responses import transfer_out
from ledger.config import Settings
from ledger.domain.model import Transfer, TransferStatus

#: What the service answers a new transfer with (its size, but for the
#: digits of ``seq``).
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
    settings = Settings.from_env()
    [sock] = serving.bind(settings.host, settings.port, 1)
    serving.tune_garbage_collector()
    loop = serving.loop_factory(settings)()
    web.run_app(create_app(), sock=sock, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
