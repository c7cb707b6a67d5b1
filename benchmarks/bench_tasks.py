"""The code the benchmarks run on the cluster: tasks, and functions for ``run``/``run_on_scheduler``.

It lives in a module of its own, importable by the workers (the runner puts
this folder on every child process's ``PYTHONPATH``), so both systems pickle
these functions by reference, as they would a user's library function, not by
value. It imports nothing heavy at module level.
"""

from __future__ import annotations

import os
import time
from typing import Any


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def make_array(nbytes: int) -> Any:
    """A float64 array of ``nbytes`` bytes holding 0, 1, 2, ..."""
    import numpy as np

    return np.arange(nbytes // 8, dtype=np.float64)


def array_sum_expected(nbytes: int) -> float:
    n = nbytes // 8
    return float(n * (n - 1) // 2)


def wait_for_file(path: str, timeout: float) -> int:
    """Block until ``path`` exists (or ``timeout`` seconds pass): a future that stays pending."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return 0


def worker_pid() -> int:
    return os.getpid()


# ------------------------------------------------------------- scheduler inspection


def trioclust_task_count(dask_scheduler: Any) -> int:
    return len(dask_scheduler.state.tasks)


def dask_task_count(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)


def trioclust_who_has(key: str, dask_scheduler: Any) -> list[str]:
    ts = dask_scheduler.state.tasks.get(key)
    return sorted(ts.who_has) if ts is not None else []


def collect_garbage() -> int:
    import gc

    return gc.collect()


# ------------------------------------------------- worker-to-worker fetches (scenario e)


async def trioclust_fetch(key: str, holder: str, dask_worker: Any) -> tuple[float, float]:
    """Fetch ``key`` from the worker at ``holder`` the way a trioclust worker fetches a dependency.

    It is :meth:`trioclust.runtime.worker.Worker._gather` without the state
    machine: the worker's own connection pool, one ``get-data`` request, and
    the value unpickled. Returns the seconds it took and the array's sum.
    """
    link = await dask_worker._pool.get(holder)  # connect outside the timed part
    start = time.perf_counter()
    reply = await link.request("get-data", keys=[key])
    value = reply["data"][key]
    if hasattr(value, "deserialize"):
        value = value.deserialize()
    seconds = time.perf_counter() - start
    return seconds, float(value.sum())


async def dask_fetch(key: str, holder: str, dask_worker: Any) -> tuple[float, float]:
    """Fetch ``key`` from the worker at ``holder`` the way a dask worker fetches a dependency.

    ``get_data_from_worker`` is what dask's ``Worker.gather_dep`` calls:
    the worker's connection pool, the ``get_data`` request with its
    acknowledgement, the value deserialized. Returns the seconds and the sum.
    """
    from distributed.worker import get_data_from_worker

    comm = await dask_worker.rpc.connect(holder)  # open a pooled connection first, untimed
    dask_worker.rpc.reuse(holder, comm)
    start = time.perf_counter()
    response = await get_data_from_worker(
        dask_worker.rpc, [key], holder, who=dask_worker.address
    )
    value = response["data"][key]
    seconds = time.perf_counter() - start
    return seconds, float(value.sum())


# ------------------------------------------------------ dask collections (scenario j)


def make_frame(i: int, rows: int) -> Any:
    """Partition ``i`` of scenario j's dataframe: ``rows`` rows, a group key of
    1,000 values, a float to average, and a random float to sort by."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(i)
    return pd.DataFrame(
        {
            "k": rng.integers(0, 1_000, rows),
            "x": rng.random(rows),
            "y": rng.random(rows),
        },
        index=pd.RangeIndex(i * rows, (i + 1) * rows),
    )
