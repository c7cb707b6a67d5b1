"""Tasks that launch tasks: the examples of Dask's "Launch Tasks from Tasks"
page (docs/source/task-launch.rst) and of ``get_client``'s docstring, with
only the import changed."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import anyio
import cloudpickle
import pytest

from trioclust import (
    Client,
    LocalCluster,
    Scheduler,
    Worker,
    get_client,
    get_worker,
    rejoin,
    secede,
    worker_client,
)

# worker processes cannot import this test module: send its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

BOUND = 120  # seconds a whole recursion may take on a loaded machine before it is a failure


def fib_worker_client(n: int) -> int:
    """task-launch.rst, "Connection with context manager"."""
    if n < 2:
        return n
    with worker_client() as client:
        a_future = client.submit(fib_worker_client, n - 1)
        b_future = client.submit(fib_worker_client, n - 2)
        a, b = client.gather([a_future, b_future])
    return a + b


def fib_secede(n: int) -> int:
    """task-launch.rst, "Getting the client on a worker", with secede/rejoin."""
    if n < 2:
        return n
    client = get_client()
    a_future = client.submit(fib_secede, n - 1)
    b_future = client.submit(fib_secede, n - 2)
    secede()
    a, b = client.gather([a_future, b_future])
    rejoin()
    return a + b


def fib_unique(n: int) -> int:
    """The same recursion with a task per call (``pure=False``): fib(12)
    is 465 tasks, each waiting on two sub-tasks."""
    if n < 2:
        return n
    with worker_client() as client:
        a = client.submit(fib_unique, n - 1, pure=False)
        b = client.submit(fib_unique, n - 2, pure=False)
        return sum(client.gather([a, b]))


def map_in_a_task() -> int:
    """``get_client``'s docstring example."""
    client = get_client(timeout=10)
    futures = client.map(lambda x: x + 1, range(10))  # spawn many tasks
    results = client.gather(futures)
    return sum(results)


def inc(x: int) -> int:
    return x + 1


def peak(dask_worker: Worker) -> int:
    return dask_worker.peak_threads


@pytest.mark.slow
def test_recursive_fib_completes_on_two_single_thread_worker_processes() -> None:
    # task-launch.rst: "Connection with context manager" and "Getting the
    # client on a worker" (get_client + secede/rejoin), on a process cluster
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        assert client.submit(fib_worker_client, 10).result(timeout=BOUND) == 55
        assert client.submit(fib_worker_client, 12).result(timeout=BOUND) == 144
        assert client.submit(fib_secede, 12).result(timeout=BOUND) == 144
        assert client.submit(fib_unique, 12).result(timeout=BOUND) == 144
        peaks = client.run(peak)
        print(f"peak threads per worker after fib(12) x3: {peaks}")
        assert all(n > 1 for n in peaks.values()), peaks  # seceded tasks got threads of their own


def test_get_client_in_a_task_on_in_process_workers() -> None:
    # without secede() a task waiting on its sub-tasks holds its thread (the
    # page warns of deadlocks): the docstring's example gets two per worker
    with (
        LocalCluster(n_workers=2, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        assert client.submit(map_in_a_task).result(timeout=BOUND) == 55
        assert client.submit(fib_secede, 8).result(timeout=BOUND) == 21
        # get_worker() in a task is the worker running it
        names = client.run(lambda dask_worker: dask_worker.address)
        address = client.submit(lambda: get_worker().address, pure=False).result(timeout=BOUND)
        assert address in names.values()
        # outside of tasks: the newest running client
        assert get_client() is client


def test_outside_of_tasks_there_is_no_worker() -> None:
    with pytest.raises(ValueError, match="No worker found"):
        get_worker()
    with pytest.raises(ValueError, match="only inside a task"), worker_client():
        pass
    secede()  # outside of a task: nothing to do
    rejoin()


# ------------------------------------------------------- the asynchronous client


@pytest.fixture
async def async_cluster() -> AsyncIterator[Client]:
    async with Scheduler() as s, Worker(s.address) as _a, Worker(s.address) as _b:
        async with Client(s.address, asynchronous=True) as client:
            yield client


async def submits_and_awaits(x: int) -> int:
    """A coroutine task awaiting its own sub-task through the worker's
    asynchronous client."""
    client = get_client()
    return await client.submit(inc, x) + 1


async def afib(n: int) -> int:
    if n < 2:
        return n
    with worker_client() as client:  # secedes: a waiting coroutine holds no slot
        a = client.submit(afib, n - 1)
        b = client.submit(afib, n - 2)
        x, y = await client.gather([a, b])
    return x + y


@pytest.mark.anyio
async def test_await_works_inside_coroutine_tasks(async_cluster: Client) -> None:
    client = async_cluster
    with anyio.fail_after(BOUND):
        assert await client.submit(submits_and_awaits, 1) == 3
        assert await client.submit(afib, 10) == 55
        # plain functions on the same workers share a synchronous client
        assert await client.submit(fib_secede, 7) == 13
