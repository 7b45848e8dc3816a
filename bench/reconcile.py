"""Reconciliation of a large log: duration and the reconciling process's peak RSS.

    python -m bench.reconcile [--events 1000000] [--accounts 1000] [--steps 4]

Builds the log through the real append (8190 transfers per transaction), and
at each step (a quarter of the events, by default) runs ``ledger reconcile``
as its own process, so that its peak RSS is its own. Memory should stay flat
as the log grows: the replay holds the accounts, not the events.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time

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
            measure(done, rate)
    finally:
        await writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    rows = []
    with database() as dsn:
        env = {**os.environ, "LEDGER_DATABASE_URL": dsn}

        def measure(events: int, append_rate: float) -> None:
            result, seconds, peak_mib = run_measured(ledger_command("reconcile"), env)
            report = msgspec.json.decode(result.stdout)
            assert report["ok"] and report["events_scanned"] == events, result.stderr
            rows.append((events, report["duration_ms"], events / seconds, peak_mib, append_rate))
            print(
                f"  {events:>9,} events: reconciled in {report['duration_ms']:,} ms, peak RSS {peak_mib} MiB",
                flush=True,
            )

        print(f"building {args.events:,} events over {args.accounts:,} accounts ({machine()})", flush=True)
        asyncio.run(build(dsn, args.accounts, args.events, args.steps, measure))
    print_table(
        [
            "events in log",
            "reconcile (ms)",
            "events/s (whole command)",
            "peak RSS (MiB)",
            "append rate while building (transfers/s)",
        ],
        [[f"{e:,}", f"{ms:,}", f"{per_s:,.0f}", str(peak), f"{rate:,.0f}"] for e, ms, per_s, peak, rate in rows],
    )


if __name__ == "__main__":
    main()
