"""Streaming history: 1,000,000 entries of one account and 1,000,000 events,
beside a raw asyncpg cursor over the same rows.

    python -m bench.streams [--rows 1000000]

Builds a log in which one account is on a side of every transfer, starts
``ledger serve`` on it as its own process, and streams
``/v1/accounts/{id}/entries`` and ``/v1/events``, first a tenth of the rows
and then all of them. Right before each stream, the same rows are read in
this process through a raw asyncpg server-side cursor (default codecs, in a
read-only transaction, :data:`PREFETCH` rows a round trip): the rate a
Python consumer of the database gets with no HTTP and no JSON built.

For each it reports rows/s, the ratio to the raw cursor, the time to the
first byte (the raw cursor's to its first row), and the service's RSS before
the stream and its peak during it (``VmHWM``, reset before each stream):
their difference must not grow with the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from typing import NamedTuple

import aiohttp
import asyncpg

from .common import (
    append_transfers,
    database,
    machine,
    new_writer,
    open_accounts,
    print_table,
    reset_peak_rss,
    service,
    status_mib,
)

#: Rows per round trip of the raw cursor.
PREFETCH = 1000

#: The rows of each stream, as the raw cursor reads them.
ENTRY_ROWS = """
    SELECT seq, transfer_id, type, side, amount, debits_posted, credits_posted,
           debits_pending, credits_pending, recorded_at
    FROM entries WHERE account_id = $1 AND seq > 0 ORDER BY seq LIMIT $2
"""
EVENT_ROWS = """
    SELECT seq, type, stream_id, data, metadata, recorded_at, hash
    FROM events WHERE seq > 0 ORDER BY seq LIMIT $1
"""


class Measured(NamedTuple):
    stream: str
    rows: int
    per_s: float
    raw_per_s: float
    ttfb_ms: float
    raw_first_ms: float
    rss_before: float
    rss_peak: float


async def build(dsn: str, rows: int) -> str:
    writer = new_writer(dsn)
    try:
        accounts = await open_accounts(writer, 100)
        started = time.monotonic()
        await append_transfers(writer, accounts, rows, random.Random(2), always=accounts[0])
        print(f"  built {rows:,} transfers in {time.monotonic() - started:.0f} s", flush=True)
        return str(accounts[0])
    finally:
        writer.close()


async def measure(url: str, path: str, limit: int) -> tuple[int, float, float]:
    """Stream ``path``; return the rows read, time to first byte and total seconds."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        started = time.monotonic()
        async with session.get(f"{url}{path}", params={"limit": str(limit)}) as response:
            assert response.status == 200, await response.text()
            rows = 0
            first = None
            async for chunk in response.content.iter_any():
                if first is None:
                    first = time.monotonic() - started
                rows += chunk.count(b"\n")
        return rows, first or 0.0, time.monotonic() - started


async def raw_cursor(dsn: str, query: str, *args: object) -> tuple[int, float, float]:
    """Read ``query``'s rows through a server-side cursor; return how many,
    the time to the first row and the total seconds (connecting excluded)."""
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        rows = 0
        first = None
        async with conn.transaction(readonly=True):
            async for _ in conn.cursor(query, *args, prefetch=PREFETCH):
                if first is None:
                    first = time.monotonic() - started
                rows += 1
        return rows, first or 0.0, time.monotonic() - started
    finally:
        await conn.close()


async def run(dsn: str, url: str, pid: int, account: str, rows: int) -> list[Measured]:
    results = []
    for name, path, query, args in (
        ("entries of one account", f"/v1/accounts/{account}/entries", ENTRY_ROWS, (uuid.UUID(account),)),
        ("events", "/v1/events", EVENT_ROWS, ()),
    ):
        for limit in (rows // 10, rows):
            raw_count, raw_first, raw_seconds = await raw_cursor(dsn, query, *args, limit)
            reset_peak_rss(pid)
            before = status_mib(pid, "VmRSS")
            count, ttfb, seconds = await measure(url, path, limit)
            assert count == raw_count == limit, (count, raw_count, limit)
            result = Measured(
                name,
                count,
                count / seconds,
                raw_count / raw_seconds,
                ttfb * 1000,
                raw_first * 1000,
                before,
                status_mib(pid, "VmHWM"),
            )
            results.append(result)
            print(
                f"  {name}: {count:,} rows, {result.per_s:,.0f} rows/s "
                f"(raw cursor {result.raw_per_s:,.0f}, ratio {result.per_s / result.raw_per_s:.2f}), "
                f"first byte {result.ttfb_ms:.0f} ms, service RSS {before:.0f} MiB, "
                f"peak {result.rss_peak:.0f} MiB (+{result.rss_peak - before:.1f})",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"building a log of {args.rows:,} transfers ({machine()})", flush=True)
    with database() as dsn:
        account = asyncio.run(build(dsn, args.rows))
        with service(dsn) as (url, pid):
            results = asyncio.run(run(dsn, url, pid, account, args.rows))
    print_table(
        [
            "stream",
            "rows",
            "rows/s",
            "raw cursor rows/s",
            "ratio to raw cursor",
            "time to first byte (ms)",
            "raw cursor's first row (ms)",
            "service RSS before (MiB)",
            "peak during the stream (MiB)",
            "growth (MiB)",
        ],
        [
            [
                r.stream,
                f"{r.rows:,}",
                f"{r.per_s:,.0f}",
                f"{r.raw_per_s:,.0f}",
                f"{r.per_s / r.raw_per_s:.2f}",
                f"{r.ttfb_ms:.1f}",
                f"{r.raw_first_ms:.1f}",
                f"{r.rss_before:.1f}",
                f"{r.rss_peak:.1f}",
                f"{r.rss_peak - r.rss_before:.1f}",
            ]
            for r in results
        ],
    )


if __name__ == "__main__":
    main()
