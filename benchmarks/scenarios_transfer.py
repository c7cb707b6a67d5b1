"""Scenario e: a large NumPy array made on worker A, fetched by worker B.

Method (the same for both systems): a task makes the array
(``make_array``, float64, ``transfer_bytes`` bytes); the scheduler says which
worker holds it (A). Then ``client.run`` on the other worker (B) fetches the
key from A with the worker's own machinery for fetching a dependency, timed
inside B around that call alone: for trioclust, B's connection pool and one
``get-data`` request, the value unpickled (what ``Worker._gather`` does); for
dask, ``distributed.worker.get_data_from_worker`` on B's connection pool (what
``Worker.gather_dep`` calls). The connection is opened before the timer
starts; the first fetch is a warm-up and is not counted; the best of the
others is reported. B sums the array it received and the sum is checked.

Why not a consumer task pinned on B: trioclust has no ``workers=`` yet, and
its scheduler places a task with dependencies on the worker that holds most of
their bytes, so a consumer would always land on A and nothing would cross.
"""

from __future__ import annotations

from typing import Any

from bench_tasks import (
    array_sum_expected,
    dask_fetch,
    make_array,
    trioclust_fetch,
    trioclust_who_has,
)
from clusters import is_dask, open_cluster, sync_client
from sizes import Sizes


def _wait(system: str, futures: list[Any]) -> None:
    if is_dask(system):
        from distributed import wait
    else:
        from trioclust import wait
    wait(futures)


def run(system: str, sizes: Sizes, n_workers: int) -> dict[str, Any]:
    nbytes = sizes.transfer_bytes
    with open_cluster(system, n_workers) as info, sync_client(info) as client:
        workers = sorted(client.scheduler_info()["workers"])
        if is_dask(system):
            future = client.submit(make_array, nbytes, pure=False, workers=[workers[0]])
            _wait(system, [future])
            holders = sorted(client.who_has([future])[future.key])
            fetch: Any = dask_fetch
        else:
            future = client.submit(make_array, nbytes, pure=False)
            _wait(system, [future])
            holders = client.run_on_scheduler(trioclust_who_has, future.key)
            fetch = trioclust_fetch
        record = timed_fetches(client, fetch, future.key, holders, workers, nbytes, sizes.transfer_repeats)
        del future
    return record


def timed_fetches(
    client: Any, fetch: Any, key: str, holders: list[str], workers: list[str], nbytes: int, repeats: int
) -> dict[str, Any]:
    """Fetch ``key`` from its one holder on another worker, a warm-up and ``repeats`` timed runs.

    Each run checks the array's sum. Returns ``bytes``, ``holder``,
    ``fetcher``, ``mb_per_s`` (of the best run, 1 MB = 10**6 bytes),
    ``runs_s`` and ``warmup_s``.
    """
    assert len(holders) == 1, f"expected one holder, got {holders}"
    holder = holders[0]
    fetcher = next(w for w in workers if w != holder)
    runs = []
    for _ in range(repeats + 1):
        seconds, total = client.run(fetch, key, holder, workers=[fetcher])[fetcher]
        assert total == array_sum_expected(nbytes), "the fetched array is wrong"
        runs.append(seconds)
    return {
        "bytes": nbytes,
        "holder": holder,
        "fetcher": fetcher,
        "mb_per_s": nbytes / min(runs[1:]) / 1e6,
        "runs_s": runs[1:],
        "warmup_s": runs[0],
    }
