"""Other processes of this machine, as the service finds them."""

from __future__ import annotations

import os
import signal

import psutil

#: What stops a ``ledger`` process cleanly: a supervisor's SIGTERM, Ctrl-C, and
#: the hangup of a terminal closed on it.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists, another user's included (a process
    that has exited but was not reaped yet counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def running(pid: int) -> bool:
    """Whether process ``pid`` runs: one that has exited but was not reaped
    (a zombie, as orphans stay where nothing reaps them) does not."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's, which only runs can hide
        return True
