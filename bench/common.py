"""What the benchmarks share: a database to run on, and a log to measure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC
from decimal import Decimal
from pathlib import Path

from ledger.domain.commands import MakeTransfer, OpenAccount
from ledger.domain.model import AccountFlags
from ledger.store import embedded
from ledger.store.retry import RetryPolicy
from ledger.store.write_path import AppendRequest
from ledger.store.writer import Writer

BATCH = 8190


@contextlib.contextmanager
def database() -> Iterator[str]:
    """``LEDGER_BENCH_DATABASE_URL`` (an empty, migrated database), else a
    fresh embedded PostgreSQL in a temporary directory, removed afterwards."""
    given = os.environ.get("LEDGER_BENCH_DATABASE_URL")
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp, embedded.migrated(Path(tmp) / "data") as dsn:
        yield dsn


async def open_accounts(writer: Writer, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    for start in range(0, count, BATCH):
        await writer.submit(
            [AppendRequest([OpenAccount(i, "USD", 2, AccountFlags(), {}) for i in ids[start : start + BATCH]])]
        )
    return ids


async def append_transfers(
    writer: Writer, accounts: list[uuid.UUID], count: int, rng: random.Random, *, always: uuid.UUID | None = None
) -> None:
    """``count`` posted transfers between random pairs (with ``always`` on
    one side of every one, if given), through the real append, :data:`BATCH`
    per transaction."""
    others = [a for a in accounts if a != always]
    for start in range(0, count, BATCH):
        commands = []
        for _ in range(min(BATCH, count - start)):
            if always is None:
                debit, credit = rng.sample(accounts, 2)
            else:
                other = rng.choice(others)
                debit, credit = (always, other) if rng.random() < 0.5 else (other, always)
            amount = Decimal(rng.randint(1, 100_000)).scaleb(-2)
            commands.append(MakeTransfer(uuid.uuid4(), debit, credit, amount, "USD", None, {}))
        await writer.submit([AppendRequest(commands)])


def new_writer(dsn: str) -> Writer:
    from datetime import datetime

    return Writer(dsn, policy=RetryPolicy(), clock=lambda: datetime.now(UTC))


def run_measured(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run ``args``; return the result, its wall time in seconds, and its own
    peak RSS in MiB (from ``wait4``, so earlier children do not count)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        process = subprocess.Popen(args, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(args, os.waitstatus_to_exitcode(status), out.read(), err.read())
    return result, elapsed, usage.ru_maxrss // 1024


@contextlib.contextmanager
def service(dsn: str, log: Path | None = None, **env: str) -> Iterator[tuple[str, int]]:
    """``ledger serve`` on ``dsn`` as a process of its own: its URL and pid
    (see :func:`served`)."""
    with served(ledger_command("serve"), log, LEDGER_DATABASE_URL=dsn, **env) as (url, pid):
        yield url, pid


@contextlib.contextmanager
def served(command: list[str], log: Path | None = None, **env: str) -> Iterator[tuple[str, int]]:
    """``command`` as a process of its own, serving on the port it is given
    in ``LEDGER_PORT``: its URL and pid, once ``GET /health/ready`` answers;
    terminated (killed, if it has not ended a minute later) when the block ends.

    Its stderr is appended to the file ``log``, as a supervisor that
    captures a service's output would keep it, or discarded if ``None``."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "ab") if log is not None else contextlib.nullcontext(subprocess.DEVNULL) as stderr:
        process = subprocess.Popen(
            command,
            env={**os.environ, "LEDGER_PORT": str(port), **env},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/health/ready", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{' '.join(command)} did not start") from None
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def peak_rss_mib(pid: int) -> int:
    """A live process's peak resident memory so far (``VmHWM``), in MiB."""
    return int(status_mib(pid, "VmHWM"))


def status_mib(pid: int, field: str) -> float:
    """A memory ``field`` of a live process's ``/proc/PID/status`` (``VmRSS``,
    ``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def reset_peak_rss(pid: int) -> None:
    """Start a live process's ``VmHWM`` again from its RSS now (Linux's
    ``clear_refs``, value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _with_descendants(pid: int) -> Iterator[int]:
    """A live process and its live descendants (the workers of ``ledger
    serve --workers N``, a server's backends)."""
    yield pid
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        yield from _with_descendants(int(child))


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU a live process and its live descendants have used so far."""
    ticks = 0
    for each in _with_descendants(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_waiting_seconds(pid: int) -> float:
    """Time the main thread of a live process, and of each of its live
    descendants (the event loops of ``ledger serve --workers N``), has spent
    ready to run but waiting for a CPU so far (``schedstat``): what the
    machine's other work (the database, the generator, other tenants) took
    from it. Of the time a process's event loop was not busy, this is what
    it waited for a CPU; the rest it had nothing to do."""
    waited = sum(int(Path(f"/proc/{each}/schedstat").read_text().split()[1]) for each in _with_descendants(pid))
    return waited / 1e9


def postmaster_pid(dsn: str) -> int | None:
    """The process of the PostgreSQL server at ``dsn``, whose CPU (with its
    backends') :func:`process_cpu_seconds` gives; None if it runs on
    another machine (or in another namespace)."""
    import asyncpg

    async def parent_of_backend() -> int | None:
        conn = await asyncpg.connect(dsn)
        try:
            stat = Path(f"/proc/{await conn.fetchval('SELECT pg_backend_pid()')}/stat")
            return int(stat.read_text().rsplit(")", 1)[1].split()[1]) if stat.exists() else None
        finally:
            await conn.close()

    return asyncio.run(parent_of_backend())


def machine_ticks() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine so far (``/proc/stat``)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


def ledger_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ledger.cli", *args]


def machine() -> str:
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A Markdown table, numbers right-aligned (every column but a text first one)."""
    text_first = rows and not rows[0][0][:1].isdigit()
    print()
    print("| " + " | ".join(headers) + " |")
    print("| " + " | ".join("---" if i == 0 and text_first else "---:" for i in range(len(headers))) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
