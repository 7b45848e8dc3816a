"""Write throughput of two commits side by side: A/B in one run.

    python -m bench.ab BASE [--rounds 3] [--seconds 10] [--scenarios single,batches]

Checks out ``BASE`` and ``HEAD`` as temporary git worktrees and runs
``python -m bench.writes`` in each, alternating (the order reversed every
other round, so that neither side always runs first on a warmer machine),
with the same interpreter and virtualenv. Prints every round's rates, and
per scenario the median rate of each side, their ratio, and the service's
CPU per item (its CPU share over its rate). The machine is shared and
noisy: compare the sides within one run, never figures from two runs.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .common import machine, print_table


@contextlib.contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """``revision`` checked out in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="ledger-ab-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), revision], check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], check=True)


def rows_of(tree: Path, args: list[str]) -> dict[str, tuple[float, float]]:
    """Run the write bench in ``tree``: rate and service CPU share per scenario."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.writes", *args], cwd=tree, check=True, capture_output=True, text=True
    ).stdout
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split(" | ")]
        if line.startswith("  service, ") and len(cells) >= 6:
            rows[cells[0]] = (float(cells[1].replace(",", "")), float(cells[5].rstrip("%")) / 100)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to compare HEAD with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", default="10")
    parser.add_argument("--scenarios", default="single,batches")
    args = parser.parse_args()
    bench_args = ["--seconds", args.seconds, "--scenarios", args.scenarios]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True)
    base = subprocess.run(["git", "rev-parse", "--short", args.base], check=True, capture_output=True, text=True)
    sides = {"base " + base.stdout.strip(): args.base, "head " + head.stdout.strip(): "HEAD"}
    print(f"A/B write throughput, {args.rounds} rounds ({machine()})", flush=True)
    runs: dict[str, list[dict[str, tuple[float, float]]]] = {side: [] for side in sides}
    with contextlib.ExitStack() as stack:
        trees = {side: stack.enter_context(worktree(rev)) for side, rev in sides.items()}
        for round_ in range(args.rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for side in order:
                runs[side].append(rows_of(trees[side], bench_args))
                rates = ", ".join(f"{name}: {rate:,.0f}" for name, (rate, _) in runs[side][-1].items())
                print(f"  round {round_ + 1}, {side}: {rates}", flush=True)
    (base_side, head_side) = sides
    table = []
    for name in runs[base_side][0]:
        medians = []
        for side in sides:
            rates = [run[name][0] for run in runs[side]]
            cpu = statistics.median(run[name][1] / run[name][0] for run in runs[side])
            medians.append((statistics.median(rates), cpu, rates))
        (b_rate, b_cpu, b_rates), (h_rate, h_cpu, h_rates) = medians
        table.append(
            [
                name.removeprefix("service, "),
                " · ".join(f"{r:,.0f}" for r in b_rates),
                " · ".join(f"{r:,.0f}" for r in h_rates),
                f"{b_rate:,.0f} → {h_rate:,.0f}",
                f"{h_rate / b_rate:.2f}x",
                f"{b_cpu * 1e6:.0f} → {h_cpu * 1e6:.0f} µs",
            ]
        )
    print_table(
        ["scenario", f"{base_side}: rates", f"{head_side}: rates", "median", "ratio", "service CPU per item"], table
    )


if __name__ == "__main__":
    main()
