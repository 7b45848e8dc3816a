"""Finding transfers: the cost of a page at 10k transfers and at 1M.

    python -m bench.queries [--small 10000] [--large 1000000] [--pages 300]

On one embedded PostgreSQL, a ledger of 1,000 accounts is filled with
``--small`` transfers (random pairs, one of 8 codes, metadata with one of 16
channels), then each query below is paged ``--pages`` times, from random
positions of the log, through :func:`ledger.store.queries.find_transfers`
(100 a page, as ``GET /v1/transfers`` reads them); then it is filled up to
``--large`` and the same is measured again. Beside each, the textbook page
of the same rows, ``ORDER BY seq OFFSET n LIMIT 100``, at the same depth:
its cost grows with the depth, which the keyset read's must not.

Prints p50 and p99 milliseconds per page, at both sizes, and the ratio of the
large ledger's p50 to the small one's.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal

import asyncpg

from bench.common import BATCH, database, machine, new_writer, open_accounts
from ledger.domain.commands import MakeTransfer
from ledger.store.connection import create_pool
from ledger.store.queries import TransferFilter, find_transfers
from ledger.store.write_path import AppendRequest

PAGE = 100
CODES = [f"code-{n}" for n in range(8)]
CHANNELS = [f"channel-{n}" for n in range(16)]


async def fill(dsn: str, accounts: list[uuid.UUID], count: int, rng: random.Random) -> None:
    writer = new_writer(dsn)
    try:
        for start in range(0, count, BATCH):
            commands = []
            for _ in range(min(BATCH, count - start)):
                debit, credit = rng.sample(accounts, 2)
                metadata = {"channel": rng.choice(CHANNELS), "order": uuid.uuid4().hex[:12]}
                amount = Decimal(rng.randint(1, 100_000)).scaleb(-2)
                commands.append(MakeTransfer(uuid.uuid4(), debit, credit, amount, "USD", rng.choice(CODES), metadata))
            await writer.submit([AppendRequest(commands)])
    finally:
        writer.close()


Page = Callable[[asyncpg.Pool, int], Awaitable[object]]


def scenarios(accounts: list[uuid.UUID], rng: random.Random) -> dict[str, tuple[Page, str | None]]:
    """Each query: how to read one page after a seq, and the textbook page's
    condition (None: no filter)."""

    def keyset(make: Callable[[], TransferFilter]) -> Page:
        async def page(pool: asyncpg.Pool, after: int) -> object:
            return await find_transfers(pool, make(), after_seq=after, descending=False, limit=PAGE)

        return page

    return {
        "every transfer": (keyset(TransferFilter), None),
        "account_id (either side)": (keyset(lambda: TransferFilter(account_id=rng.choice(accounts))), "account"),
        "code": (keyset(lambda: TransferFilter(code=rng.choice(CODES))), "code"),
        "metadata.channel": (keyset(lambda: TransferFilter(metadata={"channel": rng.choice(CHANNELS)})), "metadata"),
    }


def offset_page(condition: str | None, accounts: list[uuid.UUID], rng: random.Random) -> Page:
    async def page(pool: asyncpg.Pool, depth: int) -> object:
        if condition is None:
            return await pool.fetch("SELECT * FROM transfers ORDER BY seq OFFSET $1 LIMIT $2", depth, PAGE)
        if condition == "account":
            account = rng.choice(accounts)
            where, argument = "debit_account_id = $3 OR credit_account_id = $3", account
        elif condition == "code":
            where, argument = "code = $3", rng.choice(CODES)
        else:
            where, argument = "metadata @> $3::jsonb", {"channel": rng.choice(CHANNELS)}
        # The same share of the matches deep as the keyset page's seq is of the log.
        return await pool.fetch(
            f"SELECT * FROM transfers WHERE {where} ORDER BY seq OFFSET $1 LIMIT $2", depth, PAGE, argument
        )

    return page


async def timed(pool: asyncpg.Pool, page: Page, positions: list[int]) -> tuple[float, float]:
    times = []
    for position in positions:
        started = time.perf_counter()
        await page(pool, position)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


async def measure(dsn: str, accounts: list[uuid.UUID], size: int, pages: int, rng: random.Random) -> dict:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        await pool.execute("ANALYZE transfers")
        results = {}
        for name, (keyset, condition) in scenarios(accounts, rng).items():
            seqs = [rng.randint(0, size) for _ in range(pages)]
            matches_share = {None: 1, "account": 2 / len(accounts), "code": 1 / len(CODES)}
            share = matches_share.get(condition, 1 / len(CHANNELS))
            depths = [int(s * share) for s in seqs]
            results[name] = (
                await timed(pool, keyset, seqs),
                await timed(pool, offset_page(condition, accounts, rng), depths[: max(pages // 10, 10)]),
            )
        return results
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--pages", type=int, default=300)
    args = parser.parse_args()
    print(f"a page of 100 transfers, {args.pages} pages per query ({machine()})", flush=True)
    rng = random.Random(7)
    with database() as dsn:
        accounts = asyncio.run(opened_accounts(dsn, 1000))
        asyncio.run(fill(dsn, accounts, args.small, rng))
        small = asyncio.run(measure(dsn, accounts, args.small, args.pages, rng))
        started = time.monotonic()
        asyncio.run(fill(dsn, accounts, args.large - args.small, rng))
        print(f"  filled to {args.large:,} in {time.monotonic() - started:.0f} s", flush=True)
        large = asyncio.run(measure(dsn, accounts, args.large, args.pages, rng))
    print(
        f"| query | {args.small:,}: p50 / p99 ms | {args.large:,}: p50 / p99 ms | p50 large ÷ small "
        f"| OFFSET page at the same depth, {args.small:,} → {args.large:,}: p50 ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in small:
        (s50, s99), (o_s50, _) = small[name]
        (l50, l99), (o_l50, _) = large[name]
        print(
            f"| {name} | {s50:.2f} / {s99:.2f} | {l50:.2f} / {l99:.2f} | {l50 / s50:.2f} | {o_s50:.2f} → {o_l50:.2f} |"
        )


async def opened_accounts(dsn: str, count: int) -> list[uuid.UUID]:
    """``count`` accounts opened on ``dsn`` by a writer of their own."""
    writer = new_writer(dsn)
    try:
        return await open_accounts(writer, count)
    finally:
        writer.close()


if __name__ == "__main__":
    main()
