"""``python wait_ready.py PORT PID LOG``: wait until the service on PORT
answers /health/ready with 200 and its log LOG says ``listening on``
(with ``--workers N`` that line comes once every worker serves, while one
worker may answer before the others); fail if process PID exits first or
120 s pass."""

import os
import sys
import time
import urllib.request
from pathlib import Path

port, pid, log = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])


def ready() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as response:
            if response.status != 200:
                return False
    except OSError:
        return False
    return f"listening on http://127.0.0.1:{port}" in log.read_text(errors="replace")


deadline = time.monotonic() + 120
while not ready():
    if time.monotonic() > deadline or not os.path.exists(f"/proc/{pid}"):
        sys.exit(f"ledger serve (pid {pid}) never became ready on port {port}")
    time.sleep(0.2)
