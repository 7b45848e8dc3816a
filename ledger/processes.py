"""Other processes of this machine, as the service finds them."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from typing import Any

import psutil

#: What stops a ``ledger`` process cleanly: a supervisor's SIGTERM, Ctrl-C, and
#: the hangup of a terminal closed on it.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

#: A signal handler, or :data:`signal.SIG_IGN`.
Handler = Callable[[int, Any], None] | signal.Handlers


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """The stop signals held back from this thread for the block: a process
    spawned in it (fork and exec keep the mask) starts with them held, so
    that none kills or interrupts it before it takes them over
    (:func:`take_stop_signals`). This process gets those sent meanwhile
    when the block ends. multiprocessing's resource tracker, which lets
    SIGINT and SIGTERM through as it starts, is started first."""
    resource_tracker.ensure_running()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def take_stop_signals(handler: Handler) -> None:
    """In a process started within :func:`stop_signals_held`: ``handler``
    for each stop signal, then the signals let through (one held meanwhile
    goes to ``handler`` now)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


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
