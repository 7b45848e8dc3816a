"""Proofs and checkpoints over a million events, beside a raw point read.

    python -m bench.proofs [--events 1000000] [--proofs 2000]

On one embedded PostgreSQL, a ledger of 1,000 accounts is filled with
``--events`` transfers through the real append (so the Merkle tree is the
one appends keep), then, interleaved, ``--proofs`` times each on one
connection, in-process:
- an inclusion proof of a random event in the tree of the head (the head
  read, then ``ledger.store.tree.inclusion``: what the endpoint runs);
- a consistency proof from a random size to the head;
- a checkpoint: the head and its tree's frontier read, the root hashed and
  signed (what ``/v1/checkpoint`` does at most once a second);
- the floor: one raw asyncpg fetch of an event row by seq.
Prints p50, p99 and max in milliseconds, and each p99 over the floor's.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.common import database, machine
from bench.loadgen import percentile
from bench.queries import fill, opened_accounts
from ledger.api.checkpoints import checkpoint_text
from ledger.signing import NoteSigner
from ledger.store import tree
from ledger.store.connection import connect
from ledger.store.head import read_head


async def measure(dsn: str, count: int, rng: random.Random) -> dict[str, list[float]]:
    conn = await connect(dsn)
    signer = NoteSigner("bench", Ed25519PrivateKey.generate())

    async def inclusion() -> None:
        head = (await read_head(conn)).seq
        await tree.inclusion(conn, rng.randrange(head), head)

    async def consistency() -> None:
        head = (await read_head(conn)).seq
        await tree.consistency(conn, rng.randint(1, head), head)

    async def checkpoint() -> None:
        head, frontier = await tree.read_tip(conn)
        signer.sign(checkpoint_text(signer.name, head.seq, frontier.root()))

    async def raw_read() -> None:
        await conn.fetchrow("SELECT * FROM events WHERE seq = $1", rng.randint(1, head))

    head = (await read_head(conn)).seq
    runs: dict[str, Callable[[], Awaitable[None]]] = {
        "inclusion proof, tree of the head": inclusion,
        "consistency proof, to the head": consistency,
        "checkpoint: frontier read, root, signature": checkpoint,
        "raw asyncpg: one event by seq": raw_read,
    }
    timings: dict[str, list[float]] = {name: [] for name in runs}
    try:
        for _ in range(count):
            for name, run in runs.items():
                started = time.perf_counter()
                await run()
                timings[name].append(time.perf_counter() - started)
    finally:
        await conn.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=2000)
    args = parser.parse_args()
    print(f"proofs and checkpoints ({machine()})", flush=True)
    rng = random.Random(7)
    with database() as dsn:
        accounts = asyncio.run(opened_accounts(dsn, 1000))
        started = time.perf_counter()
        asyncio.run(fill(dsn, accounts, args.events, rng))
        print(f"  {args.events:,} transfers appended in {time.perf_counter() - started:.0f} s", flush=True)
        timings = asyncio.run(measure(dsn, args.proofs, rng))
    floor = percentile(timings["raw asyncpg: one event by seq"], 0.99)
    print(f"| at {args.events + 1000:,} events | p50 ms | p99 ms | max ms | p99 ÷ raw read p99 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, runs in timings.items():
        p50, p99 = percentile(runs, 0.5), percentile(runs, 0.99)
        print(f"| {name} | {p50 * 1e3:.2f} | {p99 * 1e3:.2f} | {max(runs) * 1e3:.2f} | {p99 / floor:.1f} |")


if __name__ == "__main__":
    main()
