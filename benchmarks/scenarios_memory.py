"""Scenario f: the scheduler's memory per pending task.

One slow future (a task that blocks until a file appears), then
``map(add, range(N), [slow] * N, pure=False)``: N tasks waiting on it. The
scheduler runs in its own process; its RSS (psutil) is read after a
``gc.collect()`` there, before the N tasks and once it holds all of them;
the difference divided by N is reported. A warm-up of 1,000 such tasks,
released again, runs first so that code paths and caches are in the baseline.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import psutil
from bench_tasks import add, collect_garbage, dask_task_count, trioclust_task_count, wait_for_file
from clusters import is_dask, open_cluster, sync_client
from sizes import Sizes

BLOCK_SECONDS = 600.0  # the slow task's upper bound, should the benchmark die before releasing it
WAIT_SECONDS = 300.0  # how long the scheduler may take to register the tasks


def _wait_for_count(client: Any, count: Any, predicate: Any) -> int:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        n = client.run_on_scheduler(count)
        if predicate(n):
            return int(n)
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scheduler holds {n} tasks after {WAIT_SECONDS} s")
        time.sleep(0.05)


def _rss_after_gc(client: Any, pid: int) -> int:
    client.run_on_scheduler(collect_garbage)
    time.sleep(0.2)
    return int(psutil.Process(pid).memory_info().rss)


def run(system: str, sizes: Sizes, n_workers: int) -> dict[str, Any]:
    n = sizes.pending_tasks
    count = dask_task_count if is_dask(system) else trioclust_task_count
    with tempfile.TemporaryDirectory() as tmp:
        flag = os.path.join(tmp, "release")
        with open_cluster(system, n_workers, fresh=True) as info, sync_client(info) as client:
            slow = client.submit(wait_for_file, flag, BLOCK_SECONDS, pure=False)
            try:
                warm = client.map(add, range(1000), [slow] * 1000, pure=False)
                _wait_for_count(client, count, lambda k: k >= 1001)
                del warm
                _wait_for_count(client, count, lambda k: k <= 1)
                before = _rss_after_gc(client, info.scheduler_pid)
                pending = client.map(add, range(n), [slow] * n, pure=False)
                held = _wait_for_count(client, count, lambda k: k >= n + 1)
                after = _rss_after_gc(client, info.scheduler_pid)
                assert not slow.done(), "the slow future finished early"
                del pending
            finally:
                with open(flag, "w"):
                    pass
            assert slow.result() == 0
    return {
        "tasks": n,
        "tasks_held": held,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_task": (after - before) / n,
    }
