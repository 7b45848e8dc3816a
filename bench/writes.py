"""Write throughput: the service's group commit against the textbook pattern.

    python -m bench.writes [--seconds 10] [--accounts 10000] [--scenarios single,batches,…,streams]

On one embedded PostgreSQL (synchronous_commit on), in one run:
- ``ledger serve`` (uvloop when installed) takes single-transfer POSTs from 64
  keep-alive connections, between accounts drawn uniformly from 10,000 and
  between 4 hot accounts; then ``/v1/transfer-batches`` with 8190 transfers
  per request;
- ``ledger serve --workers 1`` and ``--workers 2`` (the "workers" scenario),
  one after the other, taking the same single-transfer POSTs, then GETs of
  one account (point reads);
- the access log's cost (the "access-log" scenario), in four rounds: ``ledger serve`` with
  its access log off, then on in the default text format, then on in JSON
  (``LEDGER_LOG_FORMAT=json``), each taking the same single-transfer POSTs,
  its log appended to a file as a supervisor would keep it; each round first
  measures the floor under them, aiohttp alone (:mod:`bench.floor`);
- writes beside streams (the "streams" scenario): single-transfer POSTs alone,
  then while 4 processes read the whole log over and over, twice each,
  with the streams' default pacing (writes first) and then with it off
  (``LEDGER_STREAM_PAUSE=0``), each with the lines a second the streams got;
- the textbook pattern, driven directly against the same server: one
  SERIALIZABLE transaction per transfer (two balance UPDATEs and an INSERT),
  retried on serialization failures and deadlocks, from 64 concurrent tasks
  over the same two account distributions.

Every single-POST figure is taken after :data:`WARM_UP` seconds of the same
load, not measured. Prints transfers (or reads) per second, p50 and p99
latency, non-2xx responses, the CPU of the service process and the time its
event loop waited for a CPU (ready to run while other processes held both
cores), the CPU of the load generator, of the whole machine (busy share of all
cores) and of the database server with its backends (when it runs here), and
the ratio to the baseline: the textbook pattern, or the access log switched
off, the service without streams. Outside the access-log scenario the service
runs with its access log off (``LEDGER_ACCESS_LOG=off``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import asyncpg
import msgspec

from . import loadgen
from .common import (
    database,
    machine,
    machine_ticks,
    new_writer,
    open_accounts,
    postmaster_pid,
    print_table,
    process_cpu_seconds,
    process_waiting_seconds,
    served,
    service,
)

CONNECTIONS = 64
BATCH = 8190
SCENARIOS = ("single", "batches", "textbook", "workers", "access-log", "streams")
#: Full-log streams read over and over while single POSTs are measured ("streams").
STREAMS = 4
_READER = """
import signal, sys, urllib.request
lines = 0
def stop(*_):
    print(lines, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    with urllib.request.urlopen(sys.argv[1] + "/v1/events?after_seq=0") as stream:
        while chunk := stream.read(1 << 20):
            lines += chunk.count(b"\\n")
"""
#: The streams scenario's configurations: writes first (the default), and
#: streams that never wait for writes (the pacing switched off).
STREAM_PACES = {
    "writes first (default)": {},
    "LEDGER_STREAM_PAUSE=0": {"LEDGER_STREAM_PAUSE": "0"},
}
#: ``ledger serve --workers N`` compared by the "workers" scenario.
WORKER_COUNTS = (1, 2)
SINGLE_LOADS = ("uniform", "hot (4 accounts)")
#: The access-log scenario's configurations, the baseline first.
ACCESS_LOGS = {
    "access log off": {"LEDGER_ACCESS_LOG": "off"},
    "access log on (default, text)": {},
    "access log on, JSON": {"LEDGER_LOG_FORMAT": "json"},
}
ACCESS_LOG_ROUNDS = 4
#: The access-log scenario's floor: aiohttp alone (:mod:`bench.floor`), once a round.
FLOOR = "aiohttp alone (the floor), uniform"


def transfer_bodies(accounts: list[str], seconds: float, seed: int) -> loadgen.BodyFactory:
    """Single-transfer bodies between random pairs of ``accounts``, built
    ahead for ``seconds`` at :data:`SINGLES_AHEAD_PER_SECOND`."""
    return _ahead(_transfer_body(accounts, seed), math.ceil(seconds * SINGLES_AHEAD_PER_SECOND))


def batch_bodies(accounts: list[str], seconds: float, seed: int) -> loadgen.BodyFactory:
    """Bodies of :data:`BATCH` transfers, built ahead for ``seconds`` at
    :data:`BATCHES_AHEAD_PER_SECOND`."""
    single = _transfer_body(accounts, seed)

    def build() -> bytes:
        return b'{"transfers": [' + b",".join(single() for _ in range(BATCH)) + b"]}"

    return _ahead(build, math.ceil(seconds * BATCHES_AHEAD_PER_SECOND))


#: Bodies a generator process builds before its clock starts, per second
#: measured: enough for 20,000 single POSTs/s, or 65,000 transfers/s in
#: batches, from two processes. Built while measured, they would cost the
#: generator, which shares the cores with what it measures, some 5 µs of CPU
#: per transfer.
SINGLES_AHEAD_PER_SECOND = 10_000
BATCHES_AHEAD_PER_SECOND = 4


def _transfer_body(accounts: list[str], seed: int) -> Callable[[], bytes]:
    rng = random.Random(seed)
    encode = msgspec.json.encode

    def body() -> bytes:
        debit, credit = rng.sample(accounts, 2)
        return encode(
            {
                "id": str(uuid.uuid4()),
                "debit_account_id": debit,
                "credit_account_id": credit,
                "amount": "1.00",
                "currency": "USD",
            }
        )

    return body


def _ahead(build: Callable[[], bytes], count: int) -> loadgen.BodyFactory:
    """``count`` bodies built now, then more as asked. Each is sent once,
    whichever of the process's connections asks: a body sent twice would be
    answered as a replay, without a write."""
    built = iter([build() for _ in range(count)])

    def body(n: int) -> bytes:
        return next(built, None) or build()

    return body


async def textbook(dsn: str, accounts: int, seconds: float) -> tuple[int, int]:
    """Transfers committed and retries, one SERIALIZABLE transaction each."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "DROP TABLE IF EXISTS bench_transfers, bench_balances;"
        "CREATE TABLE bench_balances (id int PRIMARY KEY, balance numeric NOT NULL DEFAULT 0);"
        "CREATE TABLE bench_transfers (id uuid PRIMARY KEY, debit int, credit int, amount numeric);"
    )
    await conn.execute("INSERT INTO bench_balances (id) SELECT generate_series(1, $1)", accounts)
    await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=CONNECTIONS, max_size=CONNECTIONS)
    done = retries = 0
    until = time.monotonic() + seconds

    async def client(seed: int) -> None:
        nonlocal done, retries
        rng = random.Random(seed)
        async with pool.acquire() as c:
            while time.monotonic() < until:
                debit, credit = rng.sample(range(1, accounts + 1), 2)
                # Hot accounts can keep a transfer failing past the deadline:
                # it is given up then, not counted.
                while time.monotonic() < until:
                    try:
                        async with c.transaction(isolation="serializable"):
                            await c.execute("UPDATE bench_balances SET balance = balance - 1 WHERE id = $1", debit)
                            await c.execute("UPDATE bench_balances SET balance = balance + 1 WHERE id = $1", credit)
                            await c.execute(
                                "INSERT INTO bench_transfers VALUES ($1, $2, $3, 1)", uuid.uuid4(), debit, credit
                            )
                        done += 1
                        break
                    except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
                        retries += 1
                        await asyncio.sleep(rng.random() * 0.005)

    await asyncio.gather(*(client(i) for i in range(CONNECTIONS)))
    await pool.close()
    return done, retries


async def make_accounts(dsn: str, count: int) -> list[str]:
    writer = new_writer(dsn)
    try:
        return [str(i) for i in await open_accounts(writer, count)]
    finally:
        writer.close()


class Measured(NamedTuple):
    #: Items (transfers, or reads) per second.
    rate: float
    #: The service's CPU seconds per item.
    cpu_per_item: float
    #: The table's row.
    row: list[str]


def shown(rows: list[list[str]], row: list[str]) -> None:
    """Add ``row`` to the table's ``rows`` and print it at once: a run takes
    minutes, and its rounds show as they end."""
    rows.append(row)
    print("  " + " | ".join(row), flush=True)


def measured(
    url: str,
    pid: int,
    path: str,
    bodies: Callable[[int], loadgen.BodyFactory] | None,
    *,
    seconds: float,
    connections: int,
    items: int = 1,
    server: int | None = None,
) -> Measured:
    """Load ``path`` for ``seconds`` (GETs when ``bodies`` is ``None``); with
    ``server`` (the database server's pid, :func:`~bench.common.postmaster_pid`),
    the CPU of the server and its backends too."""
    cpu, waited, ticks = process_cpu_seconds(pid), process_waiting_seconds(pid), machine_ticks()
    database_cpu = process_cpu_seconds(server) if server is not None else 0.0
    result, wall = loadgen.run(url, path, bodies, connections=connections, seconds=seconds, items=items)
    cpu, ticks = process_cpu_seconds(pid) - cpu, [b - a for a, b in zip(ticks, machine_ticks())]
    waited = process_waiting_seconds(pid) - waited
    if server is not None:
        database_cpu = process_cpu_seconds(server) - database_cpu
    rate = result.items / wall
    return Measured(
        rate,
        cpu / max(result.items, 1),
        [
            f"{rate:,.0f}",
            f"{loadgen.percentile(result.latencies, 0.5) * 1000:.1f}",
            f"{loadgen.percentile(result.latencies, 0.99) * 1000:.1f}",
            str(sum(n for status, n in result.statuses.items() if status >= 300)),
            f"{cpu / wall:.0%}",
            f"{waited / wall:.0%}",
            f"{result.cpu_seconds / wall:.0%}",
            f"{ticks[0] / ticks[1]:.0%}",
            "" if server is None else f"{database_cpu / wall:.0%}",
        ],
    )


#: Seconds of the same load, not measured, before a single-POST figure: a
#: service just started reads each account the first time a batch names it,
#: and holds it from then on; a figure is of the service as it runs, not as
#: it starts.
WARM_UP = 3.0


def single_posts(url: str, pid: int, accounts: list[str], *, seconds: float, server: int | None = None) -> Measured:
    """:func:`measured` single-transfer POSTs between ``accounts`` from
    :data:`CONNECTIONS` connections, after :data:`WARM_UP` seconds of them:
    the load every single-POST figure takes."""
    warm_up = functools.partial(transfer_bodies, accounts, WARM_UP)
    loadgen.run(url, "/v1/transfers", warm_up, connections=CONNECTIONS, seconds=WARM_UP)
    bodies = functools.partial(transfer_bodies, accounts, seconds)
    return measured(url, pid, "/v1/transfers", bodies, seconds=seconds, connections=CONNECTIONS, server=server)


def access_log_rows(dsn: str, pools: dict[str, list[str]], seconds: float, server: int | None) -> list[list[str]]:
    """Single POSTs through the service in each of :data:`ACCESS_LOGS`, in
    :data:`ACCESS_LOG_ROUNDS` rounds, the order reversed every other round
    (the log grows as it runs, so what comes later is measured on more rows);
    then, per configuration, the median rate and the median service CPU per
    POST, each with its ratio to the baseline's (the CPU, which the machine's
    other tenants disturb less than the rate, says what the log costs) and
    its share of the floor's rate: aiohttp alone, measured first in each
    round, which says how fast this machine is in this run."""
    rows = []
    runs: dict[tuple[str, str], list[Measured]] = {}
    floor: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-logs-") as tmp:
        for round in range(ACCESS_LOG_ROUNDS):
            with served([sys.executable, "-m", "bench.floor"]) as (url, pid):
                floor.append(single_posts(url, pid, pools[SINGLE_LOADS[0]], seconds=seconds))
            shown(rows, [f"round {round + 1}, {FLOOR}", *floor[-1].row])
            configs = list(ACCESS_LOGS.items())
            for config, env in configs if round % 2 == 0 else reversed(configs):
                log = Path(tmp) / f"{config}.log"
                with service(dsn, log=log, **env) as (url, pid):
                    for name in SINGLE_LOADS:
                        run = single_posts(url, pid, pools[name], seconds=seconds, server=server)
                        runs.setdefault((config, name), []).append(run)
                        shown(rows, [f"round {round + 1}, {config}, {name}", *run.row])
        for config in ACCESS_LOGS:
            with (Path(tmp) / f"{config}.log").open("rb") as lines:
                print(f"  ({config}: {sum(1 for _ in lines):,} log lines)", flush=True)
    floor_rate = statistics.median(r.rate for r in floor)
    rows.append(
        [
            f"median, {FLOOR}",
            f"{floor_rate:,.0f}",
            *[""] * 3,
            f"{statistics.median(r.cpu_per_item for r in floor) * 1e6:.0f} µs/POST",
        ]
    )
    baseline = next(iter(ACCESS_LOGS))
    for (config, name), measured_runs in runs.items():
        rate = statistics.median(r.rate for r in measured_runs)
        cpu = statistics.median(r.cpu_per_item for r in measured_runs)
        base_rate = statistics.median(r.rate for r in runs[baseline, name])
        base_cpu = statistics.median(r.cpu_per_item for r in runs[baseline, name])
        rows.append(
            [
                f"median, {config}, {name}",
                f"{rate:,.0f}",
                *[""] * 3,
                f"{cpu * 1e6:.0f} µs/POST",
                *[""] * 4,
                f"rate {rate / base_rate:.2f}x, CPU/POST {cpu / base_cpu:.2f}x; {rate / floor_rate:.0%} of the floor",
            ]
        )
    return rows


def streams_rows(dsn: str, accounts: list[str], seconds: float, server: int | None) -> list[list[str]]:
    """For each of :data:`STREAM_PACES`: single POSTs (uniform) alone, then
    while :data:`STREAMS` processes read the whole log over and over,
    alternating, twice each; the lines the streams got a second, the
    medians, and the rate with streams over the rate without."""
    rows = []
    for pace, env in STREAM_PACES.items():
        rates: dict[bool, list[float]] = {False: [], True: []}
        with service(dsn, LEDGER_ACCESS_LOG="off", **env) as (url, pid):
            for round_ in range(4):
                streaming = round_ % 2 == 1
                started = time.perf_counter()
                readers = [
                    subprocess.Popen(
                        [sys.executable, "-c", _READER, url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
                    )
                    for _ in range(STREAMS if streaming else 0)
                ]
                try:
                    rate, _, row = single_posts(url, pid, accounts, seconds=seconds, server=server)
                finally:
                    streamed = sum(_stopped(reader) for reader in readers)
                rates[streaming].append(rate)
                name = f"{STREAMS} full-log streams running" if streaming else "no stream"
                got = f"streams got {streamed / (time.perf_counter() - started):,.0f} lines/s" if streaming else ""
                shown(rows, [f"{pace}, single POSTs, uniform, {name}", *row, got])
        alone, beside = statistics.median(rates[False]), statistics.median(rates[True])
        rows.append(
            [
                f"{pace}, median, single POSTs while {STREAMS} streams run",
                f"{beside:,.0f}",
                *[""] * 8,
                f"{beside / alone:.2f}x alone",
            ]
        )
    return rows


def _stopped(reader: subprocess.Popen[bytes]) -> int:
    """Stop a stream reader; the lines it read."""
    reader.terminate()
    out, _ = reader.communicate()
    return int(out or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        type=lambda s: s.split(","),
        help="which of %(default)s to run, comma-separated",
    )
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    print(f"write throughput, {args.seconds:.0f} s per scenario ({machine()})", flush=True)
    rows = []
    service_rates = {}
    with database() as dsn:
        accounts = asyncio.run(make_accounts(dsn, args.accounts))
        pools = dict(zip(SINGLE_LOADS, (accounts, accounts[:4])))
        server = postmaster_pid(dsn)
        with service(dsn, LEDGER_ACCESS_LOG="off") as (url, pid):
            for name in SINGLE_LOADS if "single" in args.scenarios else ():
                service_rates[name], _, row = single_posts(url, pid, pools[name], seconds=args.seconds, server=server)
                shown(rows, [f"service, single POSTs, {name}", *row])
            if "batches" in args.scenarios:
                _, _, row = measured(
                    url,
                    pid,
                    "/v1/transfer-batches",
                    functools.partial(batch_bodies, accounts, args.seconds),
                    seconds=args.seconds,
                    connections=2,
                    items=BATCH,
                    server=server,
                )
                shown(rows, [f"service, batches of {BATCH}", *row])
        for workers in WORKER_COUNTS if "workers" in args.scenarios else ():
            with service(dsn, LEDGER_ACCESS_LOG="off", LEDGER_WORKERS=str(workers)) as (url, pid):
                for name in SINGLE_LOADS:
                    _, _, row = single_posts(url, pid, pools[name], seconds=args.seconds, server=server)
                    shown(rows, [f"service, --workers {workers}, single POSTs, {name}", *row])
                _, _, row = measured(
                    url,
                    pid,
                    f"/v1/accounts/{accounts[0]}",
                    None,
                    seconds=args.seconds,
                    connections=CONNECTIONS,
                    server=server,
                )
                shown(rows, [f"service, --workers {workers}, point reads (GET /v1/accounts/{{id}})", *row])
        if "access-log" in args.scenarios:
            rows += access_log_rows(dsn, pools, args.seconds, server)
        if "streams" in args.scenarios:
            rows += streams_rows(dsn, accounts, args.seconds, server)
        for name, count in (("uniform", args.accounts), ("hot (4 accounts)", 4)):
            if "textbook" not in args.scenarios:
                break
            started = time.monotonic()
            done, retries = asyncio.run(textbook(dsn, count, args.seconds))
            rate = done / (time.monotonic() - started)
            if done < 100:
                ratio = f"{done} committed"
            else:
                ratio = f"{service_rates[name] / rate:.1f}x textbook" if name in service_rates else ""
            shown(
                rows,
                [
                    f"textbook, 1 SERIALIZABLE tx per transfer, {name}",
                    f"{rate:,.0f}",
                    "",
                    "",
                    f"{retries:,} retries",
                    *[""] * 5,
                    ratio,
                ],
            )
    for row in rows:
        row += [""] * (11 - len(row))
    print_table(
        [
            "scenario",
            "per second",
            "p50 (ms)",
            "p99 (ms)",
            "non-2xx",
            "service CPU",
            "event loop waiting for a CPU",
            "generator CPU",
            "machine busy",
            "database CPU",
            "ratio",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
