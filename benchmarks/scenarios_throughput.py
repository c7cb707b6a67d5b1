"""Scenarios c and d: many small tasks.

c: ``gather(map(inc, range(N), pure=False))``, timed from the ``map`` call to
the last result, for each N; tasks/s of the best run. dask runs it twice, on
separate clusters: with its defaults, and with
``distributed.scheduler.worker-saturation: inf`` (every task sent to the
workers at once, no queueing on the scheduler).

d: a tree reduction: ``map(inc, range(L), pure=False)`` makes L leaves (L a
power of two), then ``submit(add, a, b)`` sums neighbours pairwise, layer
after layer, down to one future: 2L - 1 tasks, timed from the first submit to
the final result.
"""

from __future__ import annotations

import time
from typing import Any

from bench_tasks import add, inc
from clusters import open_cluster, sync_client
from sizes import Sizes

SETTLE_SECONDS = 0.5  # between runs, so that the last run's releases are done


def measure_map(client: Any, n: int) -> float:
    start = time.perf_counter()
    futures = client.map(inc, range(n), pure=False)
    results = client.gather(futures)
    seconds = time.perf_counter() - start
    assert sum(results) == n * (n + 1) // 2, "wrong sum"
    del futures, results
    time.sleep(SETTLE_SECONDS)
    return seconds


def measure_tree(client: Any, leaves: int) -> float:
    start = time.perf_counter()
    layer = client.map(inc, range(leaves), pure=False)
    while len(layer) > 1:
        layer = [client.submit(add, layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
    total = layer[0].result()
    seconds = time.perf_counter() - start
    assert total == leaves * (leaves + 1) // 2, "wrong sum"
    del layer
    time.sleep(SETTLE_SECONDS)
    return seconds


def run_map(system: str, sizes: Sizes, n_workers: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with open_cluster(system, n_workers) as info, sync_client(info) as client:
        measure_map(client, min(500, min(sizes.map_ns)))  # warm-up
        for n in sizes.map_ns:
            runs = [measure_map(client, n) for _ in range(sizes.map_repeats)]
            out[str(n)] = {"tasks_per_s": n / min(runs), "runs_s": runs}
    return out


def run_tree(system: str, sizes: Sizes, n_workers: int) -> dict[str, Any]:
    leaves = sizes.tree_leaves
    with open_cluster(system, n_workers) as info, sync_client(info) as client:
        measure_tree(client, 64)  # warm-up
        runs = [measure_tree(client, leaves) for _ in range(sizes.tree_repeats)]
    best = min(runs)
    return {
        "leaves": leaves,
        "tasks": 2 * leaves - 1,
        "seconds": best,
        "tasks_per_s": (2 * leaves - 1) / best,
        "runs_s": runs,
    }
