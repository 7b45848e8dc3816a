"""The command line: ``ledger serve | migrate | reconcile | rebuild-projections | export | import |
verify | keygen | openapi``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from . import logs
from .config import ConfigError, Settings, log_format_of

if TYPE_CHECKING:
    import asyncpg

    from .store.reconcile import Progress, Report

log = logging.getLogger("ledger")
T = TypeVar("T")


def _serve(settings: Settings) -> int:
    from . import serving

    held = serving.hold_stop_signals()
    if not settings.tokens:
        if not _is_loopback(settings.host):
            log.error(
                "refusing to listen on %s without authentication: set LEDGER_TOKENS, or listen "
                "on a loopback address (127.0.0.1, ::1, localhost)",
                settings.host,
            )
            return 2
        log.warning("authentication is off (no LEDGER_TOKENS): allowed because %s is a loopback address", settings.host)
    return serving.serve(settings, held)


def _migrate(settings: Settings) -> int:
    from .store import migrations

    if settings.database_url is None:
        log.error(
            "set LEDGER_DATABASE_URL to the database to migrate "
            "(the embedded server is migrated by `ledger serve` itself)"
        )
        return 2
    try:
        migrations.upgrade(settings.database_url)
    except migrations.CannotMigrate as error:
        log.error("%s", error)
        return 2
    log.info("schema at %s", migrations.head_revision())
    return 0


def _reconcile(settings: Settings, repair: bool) -> int:
    """Print the reconciliation report as JSON; exit 0 if the ledger is clean,
    1 if not. The hash chain is checked in a process per core, and a progress
    bar goes to stderr when it is a terminal."""
    import msgspec

    from .api.responses import report_out
    from .store.chain_ranges import ChainWorkers
    from .store.reconcile import reconcile

    if not repair:  # the scan alone reads the replica; a repair writes, on the primary
        settings = _long_read(settings)

    async def run(conn: asyncpg.Connection, dsn: str) -> Report:
        with _progress_bar() as progress:
            return await reconcile(conn, repair=repair, chain=ChainWorkers(dsn), progress=progress)

    report = _on_database(settings, run)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(report_out(report)), indent=2).decode() + "\n")
    return 0 if report.ok else 1


@contextlib.contextmanager
def _progress_bar() -> Iterator[Progress | None]:
    """A tqdm bar of the events whose hashes are checked, on stderr if it is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(desc="checking the log", unit=" events", unit_scale=True, file=sys.stderr) as bar:

        def progress(events: int, head: int) -> None:
            bar.total = head
            bar.update(events - bar.n)

        yield progress


def _rebuild(settings: Settings) -> int:
    from .store.rebuild import rebuild_projections
    from .store.replay import ChainBroken, EventUnappliable

    try:
        rebuilt = _on_database(settings, lambda conn, _: rebuild_projections(conn))
    except (ChainBroken, EventUnappliable) as error:
        log.error("nothing rebuilt: %s; run `ledger reconcile` to see what is wrong", error)
        return 1
    log.info("projections rebuilt from %d events (%d accounts)", rebuilt.events, rebuilt.accounts)
    return 0


def _export(settings: Settings, after_seq: int, output: str | None) -> int:
    """Write the log after ``after_seq`` as NDJSON to ``output`` (default
    stdout). A file is written whole or not at all: the lines go to a new
    file beside it, which takes its name once the last line is written, so
    that a failure (the database out of reach) leaves an earlier export as
    it was."""
    from .store.export import export

    settings = _long_read(settings)
    if output is None:
        count = _on_database(settings, lambda conn, _: export(conn, sys.stdout.buffer, after_seq=after_seq))
        sys.stdout.flush()
        log.info("exported %d events after seq %d", count, after_seq)
        return 0
    target = Path(output)
    try:
        written = tempfile.NamedTemporaryFile(dir=target.absolute().parent, prefix=f".{target.name}.", delete=False)
    except OSError as error:
        log.error("cannot write the export: %s", error)
        return 2
    try:
        with written:
            count = _on_database(settings, lambda conn, _: export(conn, written, after_seq=after_seq))
    except BaseException:
        os.unlink(written.name)
        raise
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(written.name, 0o666 & ~umask)  # as a file opened for writing would be
        os.replace(written.name, target)
    except OSError as error:
        os.unlink(written.name)
        log.error("cannot write the export: %s", error)
        return 2
    log.info("exported %d events after seq %d", count, after_seq)
    return 0


def _import(settings: Settings, path: str) -> int:
    """Load the export at ``path`` after the head of the log; exit 1, having
    changed nothing, if it does not continue the log."""
    from .store.importer import ImportFailed, import_log

    try:
        source = open(path, "rb")  # before the database: a path mistyped is said at once
    except OSError as error:
        log.error("cannot read %s (%s); nothing was imported", path, error.strerror or error)
        return 2
    try:
        with source:
            rebuilt = _on_database(settings, lambda conn, _: import_log(conn, source))
    except ImportFailed as error:
        log.error("%s", error)
        return 1
    log.info("imported: the log holds %d events; %d accounts rebuilt", rebuilt.events, rebuilt.accounts)
    return 0


def _openapi() -> int:
    """Print the OpenAPI document that ``GET /openapi.json`` serves, which is
    the same whatever the settings: none is read, so that none can stop it."""
    import msgspec

    from .api.app import create_app
    from .api.openapi import document

    encoded = msgspec.json.encode(document(create_app(Settings())))
    sys.stdout.write(msgspec.json.format(encoded, indent=2).decode() + "\n")
    return 0


def _long_read(settings: Settings) -> Settings:
    """``settings`` for a long read: on the replica, if there is one."""
    if settings.read_database_url is None:
        return settings
    return dataclasses.replace(settings, database_url=settings.read_database_url)


def _on_database(settings: Settings, work: Callable[[asyncpg.Connection, str], Awaitable[T]]) -> T:
    """Run ``work(conn, dsn)`` on the service's database: ``LEDGER_DATABASE_URL``,
    or the embedded server in ``LEDGER_DATA_DIR`` (started, and migrated, for it)."""
    import asyncio

    from .store import embedded
    from .store.connection import connect

    async def run(dsn: str) -> T:
        conn = await connect(dsn)
        try:
            return await work(conn, dsn)
        finally:
            await conn.close()

    if settings.database_url is not None:
        return asyncio.run(run(settings.database_url))
    with embedded.migrated(settings.data_dir) as dsn:
        return asyncio.run(run(dsn))


def _keygen(settings: Settings, path: str) -> int:
    """Write a new signing key to ``path`` (mode 0600); print its verifier key."""
    from .signing import KeyFileError, NoteSigner, write_new_key

    try:
        key = write_new_key(Path(path))
    except KeyFileError as error:
        log.error("%s", error)
        return 2
    print(NoteSigner(settings.log_origin, key).verifier_key)
    return 0


def _seq(text: str) -> int:
    """A seq on the command line: a whole number from 0 to 2^63 - 1, as the log's are."""
    from .store.tables import MAX_BIGINT

    if not text.isdigit() or int(text) > MAX_BIGINT:
        raise argparse.ArgumentTypeError(f"not a seq: {text!r} (a whole number from 0 to {MAX_BIGINT})")
    return int(text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` asks for; its exit status. Ctrl-C, and for a
    command other than ``serve`` SIGTERM and SIGHUP too, stops it with
    status 130 and one line: what it had started is stopped on the way out
    (the embedded PostgreSQL by the block that started it). ``serve`` holds
    a stop signal until its start is done (:class:`~ledger.serving.HeldStop`)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        log.warning("interrupted")
        return 130


class _Parser(argparse.ArgumentParser):
    """A command line that cannot be read is one ERROR line in the log's
    format (one JSON object with ``LEDGER_LOG_FORMAT=json``), as every other
    mistake in what the service is given, and status 2."""

    def error(self, message: str) -> NoReturn:
        log.error("%s: %s (see `%s --help`)", self.prog, message, self.prog)
        sys.exit(2)


def _main(argv: list[str] | None) -> int:
    parser = _Parser(
        prog="ledger", description="Event-sourced double-entry ledger service (settings: LEDGER_* environment)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service (embedded PostgreSQL unless LEDGER_DATABASE_URL)")
    serve.add_argument(
        "--workers", type=int, metavar="N", help="processes serving the port (default LEDGER_WORKERS, or 1)"
    )
    commands.add_parser("migrate", help="apply the schema to LEDGER_DATABASE_URL")
    reconcile = commands.add_parser(
        "reconcile",
        help="replay the log, compare every stored balance, verify the hash chain; print the report "
        "(exit 1 unless clean)",
    )
    reconcile.add_argument("--repair", action="store_true", help="rewrite the stored balances that differ from the log")
    commands.add_parser("rebuild-projections", help="rebuild accounts, balances, transfers and entries from the log")
    commands.add_parser("openapi", help="print the OpenAPI document of the HTTP API (what /openapi.json serves)")
    export = commands.add_parser("export", help="write the event log as NDJSON, one /v1/events line per event")
    export.add_argument("--after-seq", type=_seq, default=0, metavar="N", help="only the events after seq N")
    export.add_argument("--output", metavar="FILE", help="write to FILE (default: stdout)")
    load = commands.add_parser("import", help="load an export after the head of the log, and rebuild the projections")
    load.add_argument("file", metavar="FILE", help="an NDJSON file as `ledger export` writes it")
    commands.add_parser(
        "verify",
        help="check an export offline: its hash chain, and its Merkle root and signature against a checkpoint",
        add_help=False,
    )
    keygen = commands.add_parser(
        "keygen", help="write a new Ed25519 signing key (PKCS#8 PEM, mode 0600); print its verifier key"
    )
    keygen.add_argument("path", metavar="PATH")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify"]:
        # The verifier parses its own arguments (it also runs copied out on
        # its own); argparse would take a --help among them for ledger's.
        from . import verify as verifier

        return verifier.main(argv[1:], prog="ledger verify")
    logs.configure()
    with contextlib.suppress(ConfigError):  # said below, with the other settings
        logs.configure(log_format_of(os.environ))
    args = parser.parse_args(argv)
    if args.command == "openapi":
        return _openapi()
    try:
        settings = Settings.from_env()  # a bad LEDGER_LOG_FORMAT among the rest
        if args.command == "serve" and args.workers is not None:
            settings = settings.with_workers(args.workers)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    if args.command == "serve":
        return _serve(settings)
    # A command stops on SIGTERM and SIGHUP as on Ctrl-C ("interrupted", 130),
    # stopping on its way out the embedded server it started.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    if args.command == "keygen":
        return _keygen(settings, args.path)
    from .store.embedded import CannotStart
    from .store.retry import CANNOT_OPEN, cannot_open

    try:
        if args.command == "reconcile":
            return _reconcile(settings, args.repair)
        if args.command == "export":
            return _export(settings, args.after_seq, args.output)
        if args.command == "import":
            return _import(settings, args.file)
        run = {"migrate": _migrate, "rebuild-projections": _rebuild}[args.command]
        return run(settings)
    except CANNOT_OPEN as error:
        log.error("%s", cannot_open(error))
        return 2
    except CannotStart as error:
        log.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
