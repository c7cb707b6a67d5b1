"""Scenario j: dask collections computed on the cluster (``client.compute``).

1. ``da.ones((n, n), chunks=c).sum()`` with many small chunks (10,000 of
   200 x 200 at full size, plus the reduction): the scheduler's per-task cost;
2. the same with big chunks (2,000 x 2,000): compute-bound, the workers' time;
3. a dataframe of ``rows`` rows in ``partitions`` partitions, made on the
   workers (``dd.from_map``): ``groupby("k").x.mean()``, and a ``set_index``
   shuffle on a random column (each system's default shuffle method while its
   client is the default: trioclust's task-based one, dask's p2p);
4. a ``dask.delayed`` tree of trivial tasks (``inc`` leaves summed in pairs,
   ``2 * leaves - 1`` tasks), time to result; then the same tree with every
   leaf depending on one future that stays pending, so that the scheduler holds
   every task at once: its RSS growth per task, measured as scenario f does.

Every time runs from the ``compute`` call (dask's graph building and
optimization on the client included, the same code for both systems) to the
result; best of ``collection_repeats`` runs after a small warm-up.
"""

from __future__ import annotations

import operator
import os
import tempfile
import time
from typing import Any

from bench_tasks import (
    add,
    dask_task_count,
    inc,
    make_frame,
    trioclust_task_count,
    wait_for_file,
)
from clusters import is_dask, open_cluster, sync_client
from scenarios_memory import BLOCK_SECONDS, _rss_after_gc, _wait_for_count
from sizes import Sizes

SETTLE_SECONDS = 0.5  # between runs, so that the last run's releases are done


def _best(client: Any, make: Any, check: Any, repeats: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        collection = make()
        start = time.perf_counter()
        result = client.compute(collection).result()
        runs.append(time.perf_counter() - start)
        check(result)
        del collection, result
        time.sleep(SETTLE_SECONDS)
    return {"seconds": min(runs), "runs_s": runs}


def _array_sum(client: Any, n: int, chunk: int, repeats: int) -> dict[str, Any]:
    import dask.array as da

    out = _best(
        client,
        lambda: da.ones((n, n), chunks=chunk).sum(),
        lambda r: _expect(float(r), float(n * n)),
        repeats,
    )
    return out | {"shape": n, "chunk": chunk, "chunks": (n // chunk) ** 2}


def _frame(rows: int, partitions: int) -> Any:
    import dask.dataframe as dd

    per = rows // partitions
    meta = make_frame(0, 0)
    return dd.from_map(make_frame, range(partitions), rows=per, meta=meta, enforce_metadata=False)


def _dataframe(client: Any, rows: int, partitions: int, repeats: int) -> dict[str, Any]:
    groupby = _best(
        client,
        lambda: _frame(rows, partitions).groupby("k").x.mean(),
        lambda r: _expect(len(r), 1_000),
        repeats,
    )
    shuffle = _best(
        client,
        lambda: _frame(rows, partitions).set_index("y").map_partitions(len),
        lambda r: _expect(int(sum(r)), rows // partitions * partitions),
        repeats,
    )
    return {"rows": rows, "partitions": partitions, "groupby_mean": groupby, "set_index": shuffle}


def _tree(leaves: int, dep: Any = None) -> Any:
    import dask

    layer = [
        dask.delayed(inc)(i) if dep is None else dask.delayed(add)(i, dep) for i in range(leaves)
    ]
    while len(layer) > 1:
        layer = [
            dask.delayed(operator.add)(layer[i], layer[i + 1]) if i + 1 < len(layer) else layer[i]
            for i in range(0, len(layer), 2)
        ]
    return layer[0]


def _delayed(client: Any, info: Any, system: str, leaves: int, repeats: int) -> dict[str, Any]:
    expected = leaves * (leaves + 1) // 2
    timed = _best(client, lambda: _tree(leaves), lambda r: _expect(r, expected), repeats)
    tasks = 2 * leaves - 1
    count = dask_task_count if is_dask(system) else trioclust_task_count
    with tempfile.TemporaryDirectory() as tmp:
        flag = os.path.join(tmp, "release")
        slow = client.submit(wait_for_file, flag, BLOCK_SECONDS, pure=False)
        try:
            before = _rss_after_gc(client, info.scheduler_pid)
            pending = client.compute(_tree(leaves, slow))
            held = _wait_for_count(client, count, lambda k: k >= tasks + 1)
            after = _rss_after_gc(client, info.scheduler_pid)
            assert not slow.done(), "the slow future finished early"
        finally:
            with open(flag, "w"):
                pass
        assert pending.result() == expected - leaves
        del pending
    return timed | {
        "leaves": leaves,
        "tasks": tasks,
        "tasks_per_s": tasks / timed["seconds"],
        "tasks_held": held,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_task": (after - before) / tasks,
    }


def _expect(got: Any, want: Any) -> None:
    assert got == want, f"wrong result: {got!r}, expected {want!r}"


def run(system: str, sizes: Sizes, n_workers: int) -> dict[str, Any]:
    import dask.array as da

    n = sizes.collection_array
    repeats = sizes.collection_repeats
    with open_cluster(system, n_workers, fresh=True) as info, sync_client(info) as client:
        client.compute(da.ones((400, 400), chunks=100).sum()).result()  # warm-up
        return {
            "array_small_chunks": _array_sum(client, n, sizes.collection_small_chunk, repeats),
            "array_big_chunks": _array_sum(client, n, sizes.collection_big_chunk, repeats),
            "dataframe": _dataframe(
                client, sizes.collection_rows, sizes.collection_partitions, repeats
            ),
            "delayed": _delayed(client, info, system, sizes.collection_leaves, repeats),
        }
