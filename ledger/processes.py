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
    """The stop signals held back from this thread for the block: a program
    started in it (fork and exec keep the mask) starts with them held, so
    that one sent to the whole process group (Ctrl-C at a terminal,
    systemd's stop) does not cut it midway. This process gets those sent
    meanwhile when the block ends."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextlib.contextmanager
def spawning_with_stop_signals_held() -> Iterator[None]:
    """:func:`stop_signals_held`, for Python processes that multiprocessing
    spawns in the block and that take the signals over themselves
    (:func:`take_stop_signals`). Its resource tracker is started first, and
    within the block: it lets SIGINT and SIGTERM through as it starts, and
    ignores those two alone, so that started with SIGHUP held it never hears
    one (a hang-up would kill it, and its successor print past the log)."""
    with stop_signals_held():
        resource_tracker.ensure_running()
        with stop_signals_held():
            yield


def take_stop_signals(handler: Handler) -> None:
    """In a process started within :func:`spawning_with_stop_signals_held`: ``handler``
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
