"""Other processes of this machine, as the service finds them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


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
    if not alive(pid):
        return False
    with contextlib.suppress(OSError):  # no /proc: the signal's answer stands
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    return True
