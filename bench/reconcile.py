"""Reconciliation of a large log: duration and the reconciling process's peak RSS.

    python -m bench.reconcile [--events 1000000] [--accounts 1000] [--steps 4]

Builds the log through the real append (8190 transfers per transaction), and
at each step (a quarter of the events, by default) runs ``ledger reconcile``
as its own process, so that its peak RSS is its own. Memory should stay flat
as the log grows: the replay holds the accounts, not the events. Beside it,
in the same step: the floor, a raw asyncpg server-side cursor over every
row of the log (``SELECT * FROM events ORDER BY seq``, rows decoded and
dropped), and reconciliation's ratio to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time

import asyncpg
import msgspec

from .common import (
    append_transfers,
    database,
    ledger_command,
    machine,
    new_writer,
    open_accounts,
    print_table,
    run_measured,
)


async def build(dsn: str, accounts: int, events: int, steps: int, measure) -> None:
    writer = new_writer(dsn)
    rng = random.Random(1)
    try:
        ids = await open_accounts(writer, accounts)
        done = accounts
        for step in range(1, steps + 1):
            target = events * step // steps
            started = time.monotonic()
            await append_transfers(writer, ids, target - done, rng)
            rate = (target - done) / (time.monotonic() - started)
            done = target
            await measure(done, rate)
    finally:
        writer.close()


async def raw_scan(dsn: str) -> float:
    """Seconds to read every event row through a server-side cursor."""
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            async for _ in conn.cursor("SELECT * FROM events ORDER BY seq", prefetch=1000):
                pass
        return time.perf_counter() - started
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    rows = []
    with database() as dsn:
        env = {**os.environ, "LEDGER_DATABASE_URL": dsn}

        async def measure(events: int, append_rate: float) -> None:
            result, seconds, peak_mib = run_measured(ledger_command("reconcile"), env)
            report = msgspec.json.decode(result.stdout)
            assert report["ok"] and report["events_scanned"] == events, result.stderr
            raw_ms = await raw_scan(dsn) * 1000
            rows.append((events, report["duration_ms"], raw_ms, events / seconds, peak_mib, append_rate))
            print(
                f"  {events:>9,} events: reconciled in {report['duration_ms']:,} ms, raw scan {raw_ms:,.0f} ms,"
                f" peak RSS {peak_mib} MiB",
                flush=True,
            )

        print(f"building {args.events:,} events over {args.accounts:,} accounts ({machine()})", flush=True)
        asyncio.run(build(dsn, args.accounts, args.events, args.steps, measure))
    print_table(
        [
            "events in log",
            "reconcile (ms)",
            "raw cursor scan (ms)",
            "ratio",
            "events/s (whole command)",
            "peak RSS (MiB)",
            "append rate while building (transfers/s)",
        ],
        [
            [f"{e:,}", f"{ms:,}", f"{raw:,.0f}", f"{ms / raw:.1f}", f"{per_s:,.0f}", str(peak), f"{rate:,.0f}"]
            for e, ms, raw, per_s, peak, rate in rows
        ],
    )


if __name__ == "__main__":
    main()
