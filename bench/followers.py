"""Followers under write load: commit-to-delivery latency at 50 followers.

    python -m bench.followers [--followers 50] [--seconds 10] [--batch 20]

``ledger serve`` (access log off) on one embedded PostgreSQL with 1,000
accounts; ``--followers`` clients (in a process of their own) follow
``/v1/events?follow=true`` from the head while the load generator posts
batches of ``--batch`` transfers from 8 connections for ``--seconds``. Each
follower checks that it gets every event, in order, with no gap, and notes
for each event the time from its ``recorded_at`` (the append's decision,
just before its commit) to the line's arrival (the last line of each read).
Prints the write rate, the
events each follower got, and delivery p50, p99 and max over all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import random
import time
import uuid
from datetime import UTC, datetime

import msgspec

from . import loadgen
from .common import database, machine, new_writer, open_accounts, service

CONNECTIONS = 8


def batch_bodies(accounts: list[str], size: int, seed: int) -> loadgen.BodyFactory:
    rng = random.Random(seed)

    def body(n: int) -> bytes:
        transfers = []
        for _ in range(size):
            debit, credit = rng.sample(accounts, 2)
            transfers.append(
                {
                    "id": str(uuid.uuid4()),
                    "debit_account_id": debit,
                    "credit_account_id": credit,
                    "amount": "1.00",
                    "currency": "USD",
                }
            )
        return msgspec.json.encode({"transfers": transfers})

    return body


async def _follow(url: str, after: int, until: float, delays: list[float]) -> tuple[int, bool]:
    """Follow from ``after`` until ``until``: events seen, and whether they
    came in order with no gap. Cheap per line, so that fifty followers in one
    process measure the service rather than themselves: it counts the lines
    of each read and parses only the last, checking its seq against the
    count and noting its delay."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /v1/events?follow=true&after_seq={after} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    seen, in_order, rest = 0, True, b""
    await reader.readuntil(b"\r\n\r\n")  # the status line and headers
    try:
        while time.monotonic() < until:
            try:
                data = await asyncio.wait_for(reader.read(1 << 20), until - time.monotonic())
            except TimeoutError:
                break
            if not data:
                break
            now = datetime.now(UTC)
            # Chunk-size lines are short hex, never JSON: keep the event lines.
            data = rest + data
            complete, _, rest = data.rpartition(b"\n")
            found = [line for line in complete.split(b"\n") if line.startswith(b'{"seq":')]
            if not found:
                continue
            event = msgspec.json.decode(found[-1])
            seen += len(found)
            in_order &= event["seq"] == after + seen
            delays.append((now - datetime.fromisoformat(event["recorded_at"])).total_seconds())
    finally:
        writer.close()
    return seen, in_order


def followers_main(url: str, after: int, count: int, seconds: float, ready, out) -> None:
    async def run() -> None:
        delays: list[float] = []
        until = time.monotonic() + seconds
        tasks = [asyncio.ensure_future(_follow(url, after, until, delays)) for _ in range(count)]
        await asyncio.sleep(1)  # every follower connected and caught up before the load starts
        ready.set()
        results = await asyncio.gather(*tasks)
        out.put((results, delays))

    asyncio.run(run())


async def _accounts(dsn: str) -> list[str]:
    writer = new_writer(dsn)
    try:
        return [str(i) for i in await open_accounts(writer, 1000)]
    finally:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    print(f"followers under write load ({machine()})", flush=True)
    context = multiprocessing.get_context("spawn")
    with database() as dsn:
        accounts = asyncio.run(_accounts(dsn))
        with service(dsn, LEDGER_ACCESS_LOG="off") as (url, _):
            head = len(accounts)
            ready, out = context.Event(), context.Queue()
            followers = context.Process(
                target=followers_main, args=(url, head, args.followers, args.seconds + 4, ready, out)
            )
            followers.start()
            ready.wait(30)
            result, wall = loadgen.run(
                url,
                "/v1/transfer-batches",
                functools.partial(batch_bodies, accounts, args.batch),
                connections=CONNECTIONS,
                seconds=args.seconds,
                items=args.batch,
            )
            results, delays = out.get(timeout=args.seconds + 60)
            followers.join()
    written = result.items
    counts = sorted(seen for seen, _ in results)
    delays.sort()
    print("| writes/s | followers | events each (min–max) | all in order | delivery p50 ms | p99 ms | max ms |")
    print("| ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    print(
        f"| {written / wall:,.0f} | {len(results)} | {counts[0]:,}–{counts[-1]:,} of {written:,} "
        f"| {all(ok for _, ok in results)} | {loadgen.percentile(delays, 0.5) * 1e3:.1f} "
        f"| {loadgen.percentile(delays, 0.99) * 1e3:.1f} | {delays[-1] * 1e3:.1f} |"
    )


if __name__ == "__main__":
    main()
