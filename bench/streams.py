"""Streaming history: 1,000,000 entries of one account and 1,000,000 events.

    python -m bench.streams [--rows 1000000]

Builds a log in which one account is on a side of every transfer, starts
``ledger serve`` on it as its own process, and streams
``/v1/accounts/{id}/entries`` and ``/v1/events``, first a tenth of the rows
and then all of them. It reports rows/s, time to first byte, and the
service's peak RSS after each stream: it must not grow with the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import aiohttp

from .common import (
    append_transfers,
    database,
    machine,
    new_writer,
    open_accounts,
    peak_rss_mib,
    print_table,
    service,
)


async def build(dsn: str, rows: int) -> str:
    writer = new_writer(dsn)
    try:
        accounts = await open_accounts(writer, 100)
        started = time.monotonic()
        await append_transfers(writer, accounts, rows, random.Random(2), always=accounts[0])
        print(f"  built {rows:,} transfers in {time.monotonic() - started:.0f} s", flush=True)
        return str(accounts[0])
    finally:
        await writer.close()


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


async def run(url: str, pid: int, account: str, rows: int) -> list[tuple]:
    results = []
    for name, path in (("entries of one account", f"/v1/accounts/{account}/entries"), ("events", "/v1/events")):
        for limit in (rows // 10, rows):
            count, ttfb, seconds = await measure(url, path, limit)
            assert count == limit, (count, limit)
            results.append((name, count, count / seconds, ttfb * 1000, peak_rss_mib(pid)))
            print(
                f"  {name}: {count:,} rows, {count / seconds:,.0f} rows/s, first byte {ttfb * 1000:.0f} ms, "
                f"service peak RSS {results[-1][-1]} MiB",
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
            results = asyncio.run(run(url, pid, account, args.rows))
    print_table(
        ["stream", "rows", "rows/s", "time to first byte (ms)", "service peak RSS after it (MiB)"],
        [[name, f"{n:,}", f"{per_s:,.0f}", f"{ttfb:.0f}", str(rss)] for name, n, per_s, ttfb, rss in results],
    )


if __name__ == "__main__":
    main()
