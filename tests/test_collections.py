"""Dask collections on trioclust: keys of every dask shape, compute, persist, get.

Examples follow Dask's documentation where noted (docs/source/<page>.rst of
dask/distributed, or dask's own docs).
"""

from __future__ import annotations

import operator
import os
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import cloudpickle
import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask._task_spec import Task, TaskRef

from trioclust import Client, LocalCluster, Scheduler, Worker, futures_of, wait
from trioclust import config as trioclust_config

# the worker processes cannot import this module: its functions travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
async def c() -> AsyncIterator[tuple[Client, Scheduler]]:
    async with Scheduler() as s, Worker(s.address, nthreads=2) as _a, Worker(s.address) as _b:
        async with Client(s.address, asynchronous=True, set_as_default=False) as client:
            yield client, s


def inc(x: int) -> int:
    return x + 1


# ----------------------------------------------------------------------- keys


@pytest.mark.anyio
async def test_submit_with_a_tuple_key(c: tuple[Client, Scheduler]) -> None:
    client, s = c
    f = client.submit(inc, 1, key=("x", 0))
    assert f.key == ("x", 0)
    assert await f == 2
    assert ("x", 0) in s.state.tasks
    assert "('x', 0)" in repr(f)


@pytest.mark.anyio
async def test_tuple_int_and_float_keys_in_a_graph(c: tuple[Client, Scheduler]) -> None:
    client, s = c
    a = client.submit(inc, 1, key=("a", 0, 1))
    b = client.submit(inc, a, key=("b", ("nested", 2), 1.5))
    n = client.submit(inc, 10, key=7)
    x = client.submit(inc, 0.5, key=2.5)
    total = client.submit(operator.add, b, n, key=("total",))
    assert await client.gather([a, b, n, x, total]) == [2, 3, 11, 1.5, 14]
    assert total.key == ("total",)
    assert b.key == ("b", ("nested", 2), 1.5)
    story = s.story(("b", ("nested", 2), 1.5))
    assert story
    assert all(entry[0] == ("b", ("nested", 2), 1.5) for entry in story)


@pytest.mark.anyio
async def test_a_tuple_keyed_task_that_raises_names_its_key(c: tuple[Client, Scheduler]) -> None:
    client, _ = c
    f = client.submit(operator.truediv, 1, 0, key=("div", 0))
    with pytest.raises(ZeroDivisionError):
        await f
    assert "('div', 0)" in repr(f)
    assert await client.submit(inc, 1, key=("after", 0)) == 2


# ------------------------------------------------------ on a process cluster


@pytest.fixture
def client() -> Iterator[Client]:
    """A client, dask's default scheduler, of two worker processes."""
    with LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def _pids(client: Client) -> set[int]:
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2
    assert os.getpid() not in pids
    return pids


def _block_pid(block: np.ndarray) -> np.ndarray:
    return np.full((1,) * block.ndim, os.getpid())


def _partition_pid(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"pid": [os.getpid()]})


@pytest.mark.slow
def test_array_bag_and_delayed_run_on_the_worker_processes(client: Client) -> None:
    pids = _pids(client)
    # the example: Dask's array docs (docs/source/array.rst) in small
    x = da.random.random((2000, 2000), chunks=(100, 100))
    y = (x + x.T).mean(axis=0)
    xn = x.compute()
    np.testing.assert_allclose(y.compute(), (xn + xn.T).mean(axis=0))
    ran_on = x.map_blocks(_block_pid, chunks=(1, 1), dtype=int).compute()
    assert ran_on.shape == (20, 20)
    assert set(ran_on.ravel().tolist()) <= pids

    # dask.bag word frequencies (Dask's bag docs)
    lines = ["the cat sat", "the dog sat", "a cat and a dog"] * 20
    words = db.from_sequence(lines, npartitions=6).map(str.split).flatten()
    assert dict(words.frequencies().compute()) == dict(Counter(" ".join(lines).split()))
    assert set(db.from_sequence(range(6), npartitions=6).map(lambda _: os.getpid()).compute()) <= pids

    # dask.delayed: a small DAG with a future as an argument
    # (distributed's docs/source/delayed.rst: futures inside delayed calls)
    future = client.submit(operator.mul, 6, 7)
    a = dask.delayed(operator.add)(future, 1)
    b = dask.delayed(operator.mul)(a, 2)
    c = dask.delayed(sum)([a, b, future])
    pid = dask.delayed(os.getpid)(pure=False)
    assert dask.compute(c, b, pid)[:2] == (43 + 86 + 42, 86)
    assert dask.compute(pid)[0] in pids


@pytest.mark.slow
def test_dataframes_groupby_set_index_and_merge_match_pandas(client: Client) -> None:
    pids = _pids(client)
    assert dask.config.get("dataframe.shuffle.method") == "tasks"
    rng = np.random.default_rng(0)
    n = 4000
    pdf = pd.DataFrame(
        {"k": rng.integers(0, 25, n), "v": rng.random(n), "i": rng.permutation(n)}
    )
    ddf = dd.from_pandas(pdf, npartitions=8)

    got = ddf.groupby("k").v.mean().compute().sort_index()
    pd.testing.assert_series_equal(got, pdf.groupby("k").v.mean().sort_index())

    indexed = ddf.set_index("i").compute()  # a shuffle, task-based
    pd.testing.assert_frame_equal(indexed.sort_index(), pdf.set_index("i").sort_index())
    assert indexed.index.is_monotonic_increasing

    right = pd.DataFrame({"i": rng.permutation(n), "w": rng.random(n)})
    merged = dd.merge(ddf, dd.from_pandas(right, npartitions=5), on="i").compute()
    expected = pdf.merge(right, on="i")
    pd.testing.assert_frame_equal(
        merged.sort_values("i").reset_index(drop=True),
        expected.sort_values("i").reset_index(drop=True),
    )
    ran_on = ddf.map_partitions(_partition_pid, meta={"pid": int}).compute()
    assert set(ran_on["pid"]) <= pids


@pytest.mark.slow
def test_persist_compute_and_get_on_the_cluster(client: Client) -> None:
    pids = _pids(client)
    x = da.arange(1_000, chunks=100)
    xp = x.persist()  # Dask's "persist" docs (docs/source/memory.rst)
    assert len(futures_of(xp)) == 10
    wait(xp)
    assert all(f.status == "finished" for f in futures_of(xp))
    assert int((xp + 1).sum().compute()) == sum(range(1, 1_001))
    assert int(dask.persist(x.sum())[0].compute()) == sum(range(1_000))

    # several collections sharing keys: computed once, in one graph
    total, mean = client.compute([x.sum(), x.mean()])
    assert total.result() == sum(range(1_000))
    assert mean.result() == pytest.approx(499.5)
    assert client.compute([x.max(), 5], sync=True) == [999, 5]

    # a hand-written graph with tuple keys (distributed's docs/source/api.rst, Client.get)
    dsk = {("x", 0): 1, ("x", 1): 2, ("y", 0): (operator.add, ("x", 0), ("x", 1)), "z": (os.getpid,)}
    assert client.get(dsk, [("y", 0), [("x", 1)]]) == [3, [2]]
    assert client.get(dsk, "z") in pids
    with dask.config.set(scheduler=client.get):
        assert dask.delayed(os.getpid)(pure=False).compute() in pids


class _Unpicklable:
    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("cannot pickle this on purpose")


def _boom(x: int) -> int:
    raise ZeroDivisionError(f"no {x}")


@pytest.mark.slow
def test_bad_graphs_raise_dask_errors_and_the_cluster_serves_on(client: Client) -> None:
    with pytest.raises(RuntimeError, match="Cycle detected"):
        client.get({"a": (inc, "b"), "b": (inc, "a")}, "a")
    with pytest.raises(ValueError, match="Missing dependency"):
        client.get({"a": Task("a", inc, TaskRef("nowhere"))}, "a")
    with pytest.raises(TypeError, match="serialize"):
        client.get({"u": (id, _Unpicklable())}, "u")
    with pytest.raises(ZeroDivisionError, match="no 3"):
        dask.delayed(_boom)(3).compute()
    other = Client(client.scheduler_address, set_as_default=False)
    try:
        assert other.submit(inc, 1).result() == 2
    finally:
        other.close()
    assert dask.delayed(inc)(1).compute() == 2


# --------------------------------------------------------- default scheduler


def test_the_newest_client_is_dask_default_until_it_closes() -> None:
    before = dask.config.get("scheduler", None)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as first:
            assert dask.config.get("scheduler") is first
            assert dask.config.get("dataframe.shuffle.method") == "tasks"
            with Client(cluster) as second:
                assert dask.config.get("scheduler") is second
                with Client(cluster, set_as_default=False):
                    assert dask.config.get("scheduler") is second
            assert dask.config.get("scheduler") is first
            ran = dask.delayed(threading.get_ident)(pure=False).compute()
            assert ran != threading.get_ident()  # a worker's thread, not this one
    assert dask.config.get("scheduler", None) == before
    assert dask.config.get("dataframe.shuffle.method", None) is None


# ------------------------------------------------------------ async clients


@pytest.mark.anyio
async def test_async_client_compute_persist_and_get(c: tuple[Client, Scheduler]) -> None:
    client, _ = c
    x = da.arange(100, chunks=10)
    f = client.compute(x.sum())
    assert await f == sum(range(100))
    assert await client.compute([x.max(), x.min()], sync=True) == [99, 0]
    xp = client.persist(x)
    await wait(xp)
    assert len(futures_of(xp)) == 10
    assert await client.compute((xp * 2).sum()) == 2 * sum(range(100))
    dsk = {("a", 0): 1, ("b", 0): (inc, ("a", 0))}
    assert await client.get(dsk, [("b", 0)]) == [2]
    future = client.submit(inc, 41)
    assert await client.compute(dask.delayed(inc)(future)) == 43
    with pytest.raises(RuntimeError, match="Cycle detected"):
        client.get({"a": (inc, "b"), "b": (inc, "a")}, "a")
    assert await client.submit(inc, 1) == 2


def _where(x: int) -> str:
    from trioclust import get_worker

    return str(get_worker().address)


@pytest.mark.anyio
async def test_compute_and_persist_take_placement_options() -> None:
    """Client API reference: ``compute(collections, workers=...)``, also for
    ``persist``; every task of the graph runs where it is told."""
    async with Scheduler() as s, Worker(s.address, nthreads=1) as a, Worker(s.address, nthreads=1):
        async with Client(s.address, asynchronous=True, set_as_default=False) as client:
            parts = [dask.delayed(_where)(i) for i in range(8)]
            assert set(await client.compute(parts, sync=True, workers=[a.address])) == {a.address}
            persisted = client.persist(dask.delayed(_where)(99), workers=a.address)
            assert await client.compute(persisted) == a.address
            with pytest.raises(NotImplementedError, match="per key"):
                client.compute(parts, workers={"x": a.address})
            with pytest.raises(ValueError, match="retries="):
                client.compute(parts, retries=-1)


@pytest.mark.anyio
async def test_a_graph_over_several_update_graph_chunks(c: tuple[Client, Scheduler]) -> None:
    """A chain of 2,500 tasks travels in three update-graph messages: a task
    that finishes before the message with its dependent arrives is kept (the
    chunk wants it until the last one is sent), and nothing is left after."""
    client, s = c
    n = 2_500
    dsk: dict[object, object] = {("x", 0): 0}
    for i in range(1, n):
        dsk[("x", i)] = (inc, ("x", i - 1))
    assert await client.get(dsk, ("x", n - 1)) == n - 1
    assert await client.get(dsk, [("x", n - 1), ("x", 1_200)]) == [n - 1, 1_200]
    await client.scheduler_info()  # a round trip: the releases before it are handled
    assert not s.state.tasks


# ---------------------------------------------------------------- memory order

_held: list[int] = []
_workers: list[Worker] = []


def _leaf(i: int) -> np.ndarray:
    # data the workers hold as this leaf starts: with dask.order's priorities
    # the partial sums run as their inputs arrive, so this stays near a few
    # chunks per worker instead of growing with every leaf computed
    # (through the module: this function travels by value, its globals copied)
    here = sys.modules[__name__]
    here._held.append(sum(len(w.data) for w in here._workers))
    return np.full(1_000, i, dtype=np.int64)


@pytest.mark.anyio
@pytest.mark.parametrize(("saturation", "bound"), [(1.0, 24), (32.0, 200)])
async def test_a_reduction_runs_in_dask_order_holding_few_chunks(saturation: float, bound: int) -> None:
    """Leaves first would hold every one of the 400 leaves at the last one.

    With dask's worker saturation (about 1) the workers hold a few chunks
    each; with trioclust's default (32 root tasks per thread in flight, for
    throughput) the partial sums lag the leaves by about that many.
    """
    n = 400
    leaves = [dask.delayed(_leaf)(i) for i in range(n)]
    while len(leaves) > 1:  # a binary tree of sums, as dask.array reductions build
        leaves = [
            dask.delayed(operator.add)(*leaves[i : i + 2]) if i + 1 < len(leaves) else leaves[i]
            for i in range(0, len(leaves), 2)
        ]
    total = dask.delayed(np.sum)(leaves[0])
    _held.clear()
    with trioclust_config.set(**{"scheduler.worker-saturation": saturation}):
        scheduler = Scheduler()
    async with scheduler as s, Worker(s.address) as a, Worker(s.address) as b:
        _workers[:] = [a, b]
        try:
            async with Client(s.address, asynchronous=True, set_as_default=False) as client:
                assert await client.compute(total) == 1_000 * sum(range(n))
        finally:
            _workers.clear()
    assert len(_held) == n
    assert max(_held) < bound, f"workers held up to {max(_held)} chunks of {n}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_sum_over_4000_chunks_of_8_mb_stays_under_the_memory_limit() -> None:
    """The issue's memory-order test: 32 GB of chunks summed on two workers of 1 GiB.

    Run leaves first, the graph would hold all 4,000 chunks; with dask.order's
    priorities and root tasks sent few at a time once chunks pile up
    (``scheduler.root-saturation``), each worker holds a few dozen at most.
    The scheduler's record of the bytes each worker stores (exact: every
    task-finished reports its size) and the workers' RSS (heartbeats) are
    sampled while the sum runs.
    """
    limit = 2**30
    chunk = 1_000_000  # float64: 8 MB
    x = da.ones((4_000, chunk), chunks=(1, chunk)).sum(axis=0)  # 4,000 blocks of 8 MB
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB",
        dashboard_address=None,
    ) as cluster, Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        pids = _pids(client)
        assert {w["memory_limit"] for w in client.scheduler_info()["workers"].values()} == {limit}
        f = client.compute(x)
        stored: list[int] = []
        rss: list[int] = []
        while True:  # sample until the sum is done, at most 50 ms apart
            workers = client.scheduler_info()["workers"].values()
            stored.append(max(w["nbytes"] for w in workers))
            rss.append(max(int(w["metrics"].get("memory") or 0) for w in workers))
            try:
                wait(f, timeout=0.05)
                break
            except TimeoutError:
                pass
        result = f.result()
        assert set(client.run(os.getpid).values()) == pids  # no worker was restarted
    np.testing.assert_array_equal(result, np.full(chunk, 4_000.0))
    assert len(stored) > 10
    assert max(stored) < limit // 2, f"a worker stored {max(stored) / 2**20:.0f} MiB"
    assert 0 < max(rss) < limit, f"a worker's RSS reached {max(rss) / 2**20:.0f} MiB"
