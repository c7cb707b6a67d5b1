"""Scenario: a ``get_client()`` sub-task round trip from inside a task.

One task gets its worker's client (``get_client()``), secedes, then times
``client.submit(inc, i, pure=False).result()`` round trips one after the
other, as Dask's "Launch Tasks from Tasks" page does; the samples come back
as the task's result. The same for trioclust and for dask.distributed, on
clusters of the same shape.

Run alone: ``.venv-bench/bin/python benchmarks/scenarios_task_launch.py``
(``--quick`` for fewer round trips).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def subtask_round_trips(n: int, warmup: int, dask: bool) -> list[float]:
    """In a task: seconds per sub-task round trip through the worker's client."""
    if dask:
        from distributed import get_client, secede
    else:
        from trioclust import get_client, secede
    from bench_tasks import inc

    client = get_client()
    secede()  # the sub-tasks may then run on this worker's thread too
    for i in range(warmup):
        assert client.submit(inc, i, pure=False).result() == i + 1
    samples = []
    for i in range(n):
        start = time.perf_counter()
        value = client.submit(inc, i, pure=False).result()
        samples.append(time.perf_counter() - start)
        assert value == i + 1
    return samples


def run(system: str, n: int, warmup: int, n_workers: int) -> dict[str, Any]:
    from clusters import is_dask, open_cluster, sync_client
    from scenarios_latency import summarize

    with open_cluster(system, n_workers) as info, sync_client(info) as client:
        future = client.submit(subtask_round_trips, n, warmup, is_dask(system), pure=False)
        return summarize(future.result())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 round trips instead of 1000")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    sys.path.insert(0, str(HERE))
    n, warmup = (200, 20) if args.quick else (1000, 100)
    results = {system: run(system, n, warmup, args.workers) for system in ("trioclust", "dask")}
    print(json.dumps(results, indent=2))
    ratio = results["dask"]["median_us"] / results["trioclust"]["median_us"]
    print(f"median sub-task round trip: trioclust {results['trioclust']['median_us']:.0f} us, "
          f"dask {results['dask']['median_us']:.0f} us ({ratio:.1f}x)")


if __name__ == "__main__":
    main()
