"""Coordination primitives, fire_and_forget and published datasets: the
examples of Dask's documentation with the import changed (the Futures page,
futures.rst of dask/dask, its sections "Coordinate Data Between Clients",
"Variables", "Queues", "Locks", "Semaphore", "Events" and "Fire and Forget";
and "Publish Datasets", publish.rst of dask/distributed), under the
synchronous client and the asynchronous one under trio and asyncio; leases
and locks of a killed worker's tasks are released; nothing hangs."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import cloudpickle
import pytest
from test_messages import _check, recorded  # noqa: F401 - a fixture

from trioclust import (
    Client,
    Event,
    LocalCluster,
    Lock,
    MultiLock,
    Queue,
    Scheduler,
    Semaphore,
    Variable,
    Worker,
    fire_and_forget,
    get_client,
)

# worker processes cannot import this test module: send its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

BOUND = 60  # seconds any wait may take on a loaded machine before it is a failure
SHORT = 0.05  # seconds of a timeout that is meant to pass


def inc(x: int) -> int:
    return x + 1


@pytest.fixture
def client() -> Iterator[Client]:
    with (
        LocalCluster(n_workers=2, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as c,
    ):
        yield c


# ------------------------------------------------------------------ Variables


def test_variables_page_example(client: Client) -> None:
    # futures.rst "Variables": a stopping criterion shared with a running task
    var = Variable("stopping-criterion")
    var.set(False)
    assert var.get() is False

    def long_running_task() -> int:
        var = Variable("stopping-criterion")
        rounds = 0
        while not var.get():
            rounds += 1
            Event("running").set()
            Event("round-done").wait(SHORT)
        return rounds

    future = client.submit(long_running_task)
    assert Event("running").wait(BOUND)
    var.set(True)
    assert future.result(timeout=BOUND) >= 1
    # a variable holds a future too, which stays computed
    x = client.submit(inc, 41)
    var.set(x)
    del x
    assert var.get().result(timeout=BOUND) == 42
    var.delete()
    with pytest.raises(TimeoutError, match="stopping-criterion"):
        var.get(timeout=SHORT)


def test_a_future_in_a_variable_outlives_its_client(client: Client) -> None:
    with Client(client.scheduler_address) as other:
        Variable("shared", client=other).set(other.submit(inc, 1, key="kept-by-a-variable"))
    future = Variable("shared").get(timeout=BOUND)
    assert future.key == "kept-by-a-variable"
    assert future.result(timeout=BOUND) == 2


# --------------------------------------------------------------------- Queues


def test_queues_page_example(client: Client) -> None:
    # futures.rst "Queues": tasks submit tasks and put their futures in a queue
    queue = Queue("results")

    def process(data: int) -> int:
        return data * 10

    def load_and_submit(filename: int) -> None:
        data = filename + 1  # load(filename)
        client = get_client()
        future = client.submit(process, data)
        Queue("results").put(future)

    for filename in range(3):
        future = client.submit(load_and_submit, filename)
        fire_and_forget(future)
    got = sorted(queue.get(timeout=BOUND).result(timeout=BOUND) for _ in range(3))
    assert got == [10, 20, 30]
    assert queue.qsize() == 0
    with pytest.raises(TimeoutError):
        queue.get(timeout=SHORT)
    queue.put(1)
    queue.put(2)
    assert queue.get(batch=True) == [1, 2]
    assert queue.get(batch=True) == []


def test_a_bounded_queue_holds_back_producers(client: Client) -> None:
    """``Queue(maxsize=...)``, as dask.distributed's: a task putting into a
    full queue waits until a consumer gets, a put with a timeout raises
    TimeoutError and puts nothing; the first user of a name sets its size."""
    queue = Queue("bounded", maxsize=2)

    def produce(n: int) -> int:
        q = Queue("bounded")  # the queue's maxsize is the one it was made with
        for i in range(n):
            q.put(i)
        return n

    queue.put(-1)  # makes the queue, with maxsize=2
    producer = client.submit(produce, 5)
    got = [queue.get(timeout=BOUND) for _ in range(6)]
    assert got == [-1, 0, 1, 2, 3, 4]
    assert producer.result(timeout=BOUND) == 5
    queue.put("x")
    queue.put("y")
    with pytest.raises(TimeoutError, match="room in queue 'bounded'"):
        queue.put("z", timeout=SHORT)
    assert queue.get(batch=True) == ["x", "y"]
    with pytest.raises(ValueError, match="maxsize"):
        Queue("other", maxsize=-1)


# ---------------------------------------------------------------------- Locks


def test_locks_page_example(client: Client) -> None:
    # futures.rst "Locks": one task at a time in the protected section
    def load(fn: int) -> int:
        with Lock("the-production-database"):
            inside = Variable("inside")
            assert inside.get() == 0
            inside.set(1)
            Event("round-done").wait(SHORT / 10)
            inside.set(0)
        return fn

    Variable("inside").set(0)
    futures = client.map(load, range(8))
    assert client.gather(futures) == list(range(8))
    lock = Lock("x")
    assert lock.acquire(timeout=BOUND)
    assert lock.locked()
    assert not Lock("x").acquire(timeout=SHORT)
    assert not Lock("x").acquire(blocking=False)
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError, match="Released too often"):
        lock.release()
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(blocking=False, timeout=1)


def test_semaphore_page_example(client: Client) -> None:
    # futures.rst "Semaphore": at most two tasks in the database at once
    sem = Semaphore(max_leases=2, name="database")

    def access_limited(val: int, sem: Semaphore) -> int:
        with sem:
            assert sem.get_value() <= 2
            return val

    futures = client.map(access_limited, range(10), sem=sem)
    assert client.gather(futures) == list(range(10))
    sem.close()
    assert sem.get_value() == 0


def test_events_page_example(client: Client) -> None:
    # futures.rst "Events": every task waits for the one event
    def wait_for_event(x: int) -> int:
        event = Event("my-event-1")
        event.wait()
        return x

    futures = client.map(wait_for_event, range(10))
    assert not Event("my-event-1").is_set()
    Event("my-event-1").set()
    assert client.gather(futures) == list(range(10))
    event = Event("my-event-1")
    assert event.wait(timeout=SHORT)
    event.clear()
    assert not event.wait(timeout=SHORT)


def test_multilock(client: Client) -> None:
    lock = MultiLock(names=["a", "b"])
    assert lock.acquire(timeout=BOUND)
    assert not MultiLock(names=["b", "c"]).acquire(timeout=SHORT)
    with MultiLock(names=["c"]):
        pass
    lock.release()
    with pytest.raises(RuntimeError, match="Released too often"):
        lock.release()


def test_fire_and_forget_page_example(client: Client) -> None:
    # futures.rst "Fire and Forget": the chain runs although nothing keeps c
    def write(x: int, name: str) -> None:
        Variable(name).set(x)

    a = client.submit(inc, 1)
    b = client.submit(inc, a)
    c = client.submit(write, b, "out")
    fire_and_forget(c)
    del a, b, c
    assert Variable("out").get(timeout=BOUND) == 3


# ----------------------------------------------------------- Publish Datasets


def test_publish_datasets_page_example(client: Client) -> None:
    # publish.rst: publish from one client, get from another; the data stays
    # after the publishing client has gone
    with Client(client.scheduler_address) as first:
        df2 = first.submit(lambda: [-100, -200, -300], key="negative-accounts-data")
        first.publish_dataset(negative_accounts=df2)
        with pytest.raises(KeyError, match="already exists"):
            first.publish_dataset(negative_accounts=df2)
        first.publish_dataset(df2, name="negative_accounts", override=True)
    assert client.list_datasets() == ["negative_accounts"]
    df = client.get_dataset("negative_accounts")
    assert df.result(timeout=BOUND) == [-100, -200, -300]
    # "Dictionary interface"
    client.datasets["more"] = [df, 1]
    assert list(client.datasets) == ["more", "negative_accounts"]
    more = client.datasets["more"]
    assert more[0].result(timeout=BOUND) == [-100, -200, -300]
    assert more[1] == 1
    del client.datasets["more"]
    client.unpublish_dataset("negative_accounts")
    assert client.list_datasets() == []
    with pytest.raises(KeyError):
        client.get_dataset("negative_accounts")
    assert client.get_dataset("negative_accounts", default=None) is None


# ------------------------------------------------------- killed holders


def test_a_closed_clients_lock_is_released_and_its_waits_given_up(client: Client) -> None:
    with Client(client.scheduler_address) as other:
        assert Lock("held", client=other).acquire()
        assert not Lock("held").acquire(blocking=False)
    # the client went: its lock went with it (the same for a crashed process)
    assert Lock("held").acquire(timeout=BOUND)


def hold(kind: str, name: str) -> None:
    """Take the lock (or a lease), say so, and keep it until the worker dies."""
    holder: Any = Lock(name) if kind == "lock" else Semaphore(max_leases=1, name=name)
    assert holder.acquire(timeout=BOUND)
    Event(f"{name}-taken").set()
    Event("never").wait()


@pytest.mark.slow
def test_a_killed_workers_lock_and_semaphore_lease_are_released() -> None:
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        held = [client.submit(hold, "lock", "db-lock"), client.submit(hold, "semaphore", "db-sem")]
        assert Event("db-lock-taken").wait(BOUND)
        assert Event("db-sem-taken").wait(BOUND)
        assert not Lock("db-lock").acquire(timeout=SHORT)
        assert not Semaphore(max_leases=1, name="db-sem").acquire(timeout=SHORT)
        client.cancel(held)  # not to be run again on the restarted worker
        (pid,) = client.run(os.getpid).values()
        os.kill(pid, signal.SIGKILL)
        assert Lock("db-lock").acquire(timeout=BOUND)
        assert Semaphore(max_leases=1, name="db-sem").acquire(timeout=BOUND)


# ------------------------------------------------------ asynchronous client


@pytest.fixture
async def aclient() -> AsyncIterator[Client]:
    async with Scheduler() as s, Worker(s.address, nthreads=2) as _a, Worker(s.address) as _b:
        async with Client(s.address, asynchronous=True) as client:
            yield client


@pytest.mark.anyio
async def test_the_primitives_under_the_asynchronous_client(
    aclient: Client, recorded: list[dict[str, Any]]  # noqa: F811 - the fixture
) -> None:
    client = aclient
    with anyio.fail_after(BOUND):
        var = Variable("v", client=client)
        await var.set(client.submit(inc, 1))
        assert await (await var.get()) == 2
        with pytest.raises(TimeoutError):
            await Variable("unset", client=client).get(timeout=SHORT)
        await var.delete()
        queue = Queue("q", client=client)
        await queue.put(1)
        await queue.put(2)
        assert await queue.qsize() == 2
        assert await queue.get() == 1
        assert await queue.get(batch=True) == [2]
        bounded = Queue("bounded", client=client, maxsize=1)
        await bounded.put("a")
        with pytest.raises(TimeoutError, match="room in queue 'bounded'"):
            await bounded.put("b", timeout=SHORT)
        async with anyio.create_task_group() as tg:
            tg.start_soon(bounded.put, "c")  # waits for the get below
            assert await bounded.get() == "a"
        assert await bounded.get(batch=True) == ["c"]
        lock = Lock("l", client=client)
        async with lock:
            assert await lock.locked()
            assert not await Lock("l", client=client).acquire(timeout=SHORT)
        sem = Semaphore(max_leases=2, name="s", client=client)
        assert await sem.acquire()
        assert await sem.get_value() == 1
        await sem.release()
        event = Event("e", client=client)
        assert not await event.is_set()
        assert not await event.wait(timeout=SHORT)
        await event.set()
        assert await event.wait()
        await event.clear()
        multi = MultiLock(["m1", "m2"], client=client)
        async with multi:
            pass
        await client.publish_dataset(answer=client.submit(inc, 41))
        assert await client.list_datasets() == ["answer"]
        assert await (await client.get_dataset("answer")) == 42
        await client.unpublish_dataset("answer")
        fire_and_forget(client.submit(inc, 5))
    seen: set[str] = set()
    for message in recorded:
        _check(message, seen)
    assert {"variable-get", "queue-get", "semaphore-acquire", "event-wait", "want-keys"} <= seen
