"""What the memory monitors cost on scenario c (a map of tiny tasks).

Two LocalClusters of the same shape run side by side (the scheduler in this
process, ``--workers`` worker processes of one thread under nannies): one
whose workers have a ``memory_limit`` (so the worker's and the nanny's
monitors measure RSS every ``worker.memory.monitor-interval`` and results go
into the spill store), one without (no monitor, a plain dict). Blocks of
``gather(map(inc, range(N), pure=False))`` alternate between them, A B, B A,
A B, ..., so that a drifting machine weighs on both alike; the figure to
trust is the median of the per-round ratios of tasks/s (limited /
unlimited), with its spread.

    .venv/bin/python benchmarks/memory_monitor_cost.py [--rounds 8] [--tasks 5000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
sys.path.insert(0, str(HERE))

from bench_tasks import inc  # noqa: E402

from trioclust import Client, LocalCluster  # noqa: E402


def block(client: Any, n: int) -> float:
    start = time.perf_counter()
    futures = client.map(inc, range(n), pure=False)
    client.gather(futures)
    elapsed = time.perf_counter() - start
    del futures
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="4GiB")
    args = parser.parse_args()
    shape = {"n_workers": args.workers, "threads_per_worker": 1, "dashboard_address": None}
    with (
        LocalCluster(memory_limit=args.memory_limit, **shape) as limited,
        LocalCluster(memory_limit=0, **shape) as unlimited,
        Client(limited) as a,
        Client(unlimited) as b,
    ):
        for client in (a, b):  # warm-up
            block(client, args.tasks)
        ratios, rates_a, rates_b = [], [], []
        for r in range(args.rounds):
            if r % 2 == 0:
                ra, rb = block(a, args.tasks), block(b, args.tasks)
            else:
                rb, ra = block(b, args.tasks), block(a, args.tasks)
            rates_a.append(ra)
            rates_b.append(rb)
            ratios.append(ra / rb)
    print(json.dumps({
        "tasks_per_block": args.tasks, "rounds": args.rounds, "workers": args.workers,
        "with_monitors_tasks_per_s": round(statistics.median(rates_a)),
        "without_tasks_per_s": round(statistics.median(rates_b)),
        "median_ratio": round(statistics.median(ratios), 3),
        "ratio_spread": [round(min(ratios), 3), round(max(ratios), 3)],
    }))


if __name__ == "__main__":
    main()
