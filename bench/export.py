"""ledger export, import and verify over a million events, beside a raw COPY.

    python -m bench.export [--events 1000000]

On one embedded PostgreSQL, a ledger of 1,000 accounts is filled with
``--events`` transfers (as ``bench.queries`` fills it); then, alternating,
three times each: ``ledger.store.export.export`` into a file (what ``ledger
export --output`` runs: PostgreSQL builds each NDJSON line), and a raw
``COPY events TO STDOUT`` of the same rows into a file (the floor: no line
built). Prints the seconds, events per second and MB written of each, and
the ratio. Then, once each: ``ledger.store.importer.import_log`` of that
export into a new, migrated database on the same server (what ``ledger
import`` runs: staged by COPY, checked, projections rebuilt, the Merkle tree
grown), and ``ledger.verify.verify`` of the export against the source's
root (what ``ledger verify`` runs after checking the signature).
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
from ledger.store import migrations, tree
from ledger.store.connection import connect
from ledger.store.export import export
from ledger.store.importer import import_log
from ledger.verify import verify


async def raw_copy(conn, path: Path) -> int:
    status = await conn.copy_from_query("SELECT * FROM events ORDER BY seq", output=str(path))
    return int(status.split()[-1])


def _on_database(dsn: str, name: str) -> str:
    scheme, _, rest = dsn.partition("://")
    where, _, query = rest.partition("?")
    return f"{scheme}://{where.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


async def restore_and_verify(dsn: str, path: Path) -> list[tuple[str, float, int]]:
    """Import ``path`` into a new database, then verify it: (what, seconds, events)."""
    conn = await connect(dsn)
    try:
        _, source = await tree.read_tip(conn)
        await conn.execute("CREATE DATABASE bench_restore")
    finally:
        await conn.close()
    restore = _on_database(dsn, "bench_restore")
    await asyncio.to_thread(migrations.upgrade, restore)
    conn = await connect(restore)
    try:
        started = time.perf_counter()
        rebuilt = await import_log(conn, str(path))
        imported = time.perf_counter() - started
        _, restored = await tree.read_tip(conn)
        assert restored == source, "the restored tree differs from the source's"
    finally:
        await conn.close()
    started = time.perf_counter()
    with open(path, "rb") as lines:
        count = verify(lines, source.size, source.root())
    return [
        ("ledger import (into an empty ledger)", imported, rebuilt.events),
        ("ledger verify", time.perf_counter() - started, count),
    ]


async def measure(dsn: str, rounds: int, keep: Path) -> dict[str, list[tuple[float, int, int]]]:
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
            await export(conn, str(keep))
    finally:
        await conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"export of the log ({machine()})", flush=True)
    with database() as dsn, tempfile.TemporaryDirectory() as tmp:
        accounts = asyncio.run(opened_accounts(dsn, 1000))
        asyncio.run(fill(dsn, accounts, args.events, random.Random(7)))
        kept = Path(tmp) / "log.ndjson"
        results = asyncio.run(measure(dsn, args.rounds, kept))
        restored = asyncio.run(restore_and_verify(dsn, kept))
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

    print("| what | events | s | events/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds, count in restored:
        print(f"| {name} | {count:,} | {seconds:.2f} | {count / seconds:,.0f} |")


if __name__ == "__main__":
    main()
