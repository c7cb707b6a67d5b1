"""``make demo`` / ``python -m trioclust.demo``: a LocalCluster doing real work.

Estimates pi by Monte Carlo: each of several thousand tasks throws random
points at the unit square and counts those inside the quarter circle; a tree
of pairwise sums (futures passed to futures) adds the counts up on the
cluster. ``trioclust.progress`` shows a bar per kind of task as they finish.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence

from trioclust import Client, LocalCluster, progress


def count_inside(seed: int, points: int) -> int:
    """How many of ``points`` random points of the unit square lie in the quarter circle."""
    import numpy as np

    xy = np.random.default_rng(seed).random((points, 2))
    return int(np.count_nonzero((xy * xy).sum(axis=1) <= 1.0))


def add(a: int, b: int) -> int:
    """Pairwise sum: the inner nodes of the reduction tree."""
    return a + b


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m trioclust.demo", description=__doc__)
    parser.add_argument("--chunks", type=int, default=4096, help="Monte Carlo tasks (default 4096)")
    parser.add_argument("--points", type=int, default=100_000, help="points per task (default 100,000)")
    args = parser.parse_args(argv)

    print("Starting a LocalCluster sized to this machine ...", flush=True)
    with LocalCluster() as cluster, Client(cluster) as client:
        print(repr(cluster))
        print(f"Dashboard: {cluster.dashboard_link or 'off'}")
        started = time.perf_counter()
        layer = client.map(count_inside, range(args.chunks), points=args.points)
        futures = list(layer)
        while len(layer) > 1:  # a tree of pairwise sums, computed on the cluster
            sums = [client.submit(add, a, b) for a, b in zip(layer[::2], layer[1::2], strict=False)]
            futures.extend(sums)
            layer = sums + ([layer[-1]] if len(layer) % 2 else [])
        total = len(futures)
        progress(futures)  # a bar per kind of task: count_inside, add
        inside = layer[0].result()
        elapsed = time.perf_counter() - started
        estimate = 4 * inside / (args.chunks * args.points)
        print(f"pi is about {estimate:.6f} (error {abs(estimate - math.pi):.1e}) "
              f"from {args.chunks * args.points:,} random points")
        print(f"{total:,} tasks in {elapsed:.2f} s: {total / elapsed:,.0f} tasks/s")
        print(f"Dashboard was at: {cluster.dashboard_link or 'off'}")
    print("Cluster closed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
