"""Scenario a: how long a ``LocalCluster`` of n worker processes takes to start, and to close.

Both systems: ``LocalCluster(n_workers=n, threads_per_worker=1,
processes=True, dashboard_address=None)`` (the scheduler in this process,
each worker in a process of its own under a nanny), whose constructor
returns once its workers have registered. Closed means every process has exited. Between start and close a
client checks that the cluster computes; that is not timed.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench_tasks import inc
from clusters import OwnLocalCluster, sync_client
from sizes import Sizes


def run(system: str, sizes: Sizes, n_workers: int) -> dict[str, Any]:
    starts: list[float] = []
    closes: list[float] = []
    for _ in range(sizes.start_repeats):
        cluster = OwnLocalCluster(system, n_workers)
        t0 = time.perf_counter()
        try:
            info = cluster.start()
            starts.append(time.perf_counter() - t0)
            with sync_client(info) as client:
                assert client.submit(inc, 1).result() == 2
        finally:
            t1 = time.perf_counter()
            cluster.close()
            closes.append(time.perf_counter() - t1)
    totals = [s + c for s, c in zip(starts, closes, strict=True)]
    return {
        "start_s": statistics.median(starts),
        "close_s": statistics.median(closes),
        "total_s": statistics.median(totals),
        "start_runs_s": starts,
        "close_runs_s": closes,
    }
