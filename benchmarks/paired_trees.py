"""Paired A/B of two source trees of trioclust: scenarios b (round trip) and c (map).

    python benchmarks/paired_trees.py TREE_A TREE_B [--rounds R] [--tasks N] [--round-trips M]

Where :mod:`paired` switches a setting inside one cluster, this compares two
versions of the code, e.g. a commit and the one before it checked out with
``git worktree add /tmp/base <commit>``. Each block is a process of its own
with ``PYTHONPATH`` naming one tree, so the client, the scheduler and the
workers it starts (the benchmarks' cluster shape: a scheduler process and two
nannied one-thread workers) all run that tree's code; the harness
(``clusters.py``) is this checkout's for both. Blocks alternate A B, B A,
A B, ... so that a drifting machine weighs on both alike, and the figure to
trust is the median of the per-round ratios A/B (tasks/s for c; round-trip
time for b, where below 1 means A is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def block(tasks: int, round_trips: int) -> dict[str, float]:
    """One block in this process: a fresh cluster, a warm-up, then c and b."""
    from bench_tasks import inc
    from clusters import open_cluster, sync_client

    with open_cluster("trioclust", 2, fresh=True) as info, sync_client(info) as client:
        client.gather(client.map(inc, range(2000), pure=False))  # warm-up
        start = time.perf_counter()
        client.gather(client.map(inc, range(tasks), pure=False))
        rate = tasks / (time.perf_counter() - start)
        samples = []
        for k in range(round_trips):
            start = time.perf_counter()
            client.submit(inc, k, pure=False).result()
            samples.append(time.perf_counter() - start)
    return {"c": rate, "b": statistics.median(samples) * 1e6}


def run_block(tree: Path, tasks: int, round_trips: int) -> dict[str, float]:
    tree = tree.resolve()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(HERE)]))
    out = subprocess.run(
        [sys.executable, __file__, "--block", "--tasks", str(tasks), "--round-trips", str(round_trips)],
        env=env, check=True, capture_output=True, text=True, timeout=600,
        cwd=tree,  # ``python -m`` puts the working directory first on the path
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="*", type=Path, help="TREE_A TREE_B")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks of c's map per block")
    parser.add_argument("--round-trips", type=int, default=400, help="round trips of b per block")
    parser.add_argument("--block", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.block:
        print(json.dumps(block(args.tasks, args.round_trips)))
        return 0
    if len(args.trees) != 2:
        parser.error("give two trees")
    results: list[list[dict[str, float]]] = [[], []]
    for r in range(args.rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            results[i].append(run_block(args.trees[i], args.tasks, args.round_trips))
            print(f"round {r} {'AB'[i]}: {results[i][-1]}", file=sys.stderr)
    for name, unit in (("c", "tasks/s"), ("b", "us round trip")):
        for i in (0, 1):
            values = [x[name] for x in results[i]]
            print(f"{name} {'AB'[i]} {args.trees[i]}: {statistics.median(values):,.0f} {unit} (median)")
        ratios = sorted(a[name] / b[name] for a, b in zip(*results, strict=True))
        print(
            f"{name} A/B per round: median {statistics.median(ratios):.3f} "
            f"({', '.join(f'{x:.2f}' for x in ratios)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
