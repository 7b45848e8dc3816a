"""ledger export over a million events, beside a raw COPY of the same rows.

    python -m bench.export [--events 1000000]

On one embedded PostgreSQL, a ledger of 1,000 accounts is filled with
``--events`` transfers (as ``bench.queries`` fills it); then, alternating,
three times each: ``ledger.store.export.export`` into a file (what ``ledger
export --output`` runs: PostgreSQL builds each NDJSON line), and a raw
``COPY events TO STDOUT`` of the same rows into a file (the floor: no line
built). Prints the seconds, events per second and MB written of each, and
the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import database, machine
from bench.queries import fill, opened_accounts
from ledger.store.connection import connect
from ledger.store.export import export


async def raw_copy(conn, path: Path) -> int:
    status = await conn.copy_from_query("SELECT * FROM events ORDER BY seq", output=str(path))
    return int(status.split()[-1])


async def measure(dsn: str, rounds: int) -> dict[str, list[tuple[float, int, int]]]:
    results: dict[str, list[tuple[float, int, int]]] = {"ledger export": [], "raw COPY of the rows": []}
    conn = await connect(dsn)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "out"
            for _ in range(rounds):
                for name, run in (
                    ("ledger export", lambda: export(conn, str(path))),
                    ("raw COPY of the rows", lambda: raw_copy(conn, path)),
                ):
                    started = time.perf_counter()
                    count = await run()
                    results[name].append((time.perf_counter() - started, path.stat().st_size, count))
    finally:
        await conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"export of the log ({machine()})", flush=True)
    with database() as dsn:
        accounts = asyncio.run(opened_accounts(dsn, 1000))
        asyncio.run(fill(dsn, accounts, args.events, random.Random(7)))
        results = asyncio.run(measure(dsn, args.rounds))
    floor = statistics.median(s for s, _, _ in results["raw COPY of the rows"])
    print("| what | events | median s | events/s | MB written | ratio to raw COPY |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, runs in results.items():
        seconds = statistics.median(s for s, _, _ in runs)
        size, count = runs[-1][1], runs[-1][2]
        row = [
            f"{count:,}",
            f"{seconds:.2f}",
            f"{count / seconds:,.0f}",
            f"{size / 1e6:,.0f}",
            f"{seconds / floor:.2f}",
        ]
        print(f"| {name} | {' | '.join(row)} |")


if __name__ == "__main__":
    main()
