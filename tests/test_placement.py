"""Placement and scheduling controls on a real cluster: ``workers=``,
``allow_other_workers=``, ``resources=``, ``retries=``, ``Future.retry()``,
``fifo_timeout=``, scatter's options, and work stealing.

Examples come from Dask's pages "Data Locality" (docs/source/locality.rst)
and "Worker Resources" (docs/source/resources.rst), named in each test.
"""

from __future__ import annotations

import itertools
import operator
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from trioclust import Client, LocalCluster, Nanny, Scheduler, Worker, as_completed, wait
from trioclust.runtime.resources import parse_resources

pytestmark = pytest.mark.anyio


def where() -> str:
    """The name of the worker running this task (its threads carry it)."""
    return threading.current_thread().name.removeprefix("trioclust-worker-").rsplit("-", 1)[0]


def where_with(x: Any) -> str:
    return where()


@pytest.fixture
async def alice_bob() -> AsyncIterator[tuple[Client, Scheduler, Worker, Worker]]:
    async with (
        Scheduler() as s,
        Worker(s.address, nthreads=2, name="Alice") as alice,
        Worker(s.address, nthreads=2, name="Bob") as bob,
        Client(s.address, asynchronous=True) as client,
    ):
        yield client, s, alice, bob


# ------------------------------------------------------------ Data Locality


async def test_locality_user_control_workers_by_name(alice_bob: Any) -> None:
    """locality.rst, "User Control": ``client.submit(func, *args, workers=['Alice'])``."""
    client, _, _, _ = alice_bob
    futures = [client.submit(where, workers=["Alice"], pure=False) for _ in range(8)]
    assert set(await client.gather(futures)) == {"Alice"}
    # "client.map(func, sequence, workers='worker_1')": a single name
    assert set(await client.gather(client.map(where_with, range(8), workers="Bob"))) == {"Bob"}


async def test_locality_allow_other_workers(alice_bob: Any) -> None:
    """locality.rst: ``workers=['Alice'], allow_other_workers=True`` runs
    elsewhere when Alice is not there."""
    client, _, _, _ = alice_bob
    future = client.submit(where, workers=["Carol"], allow_other_workers=True)
    assert await future in ("Alice", "Bob")
    # with Alice there, a loose restriction still sends it to Alice
    assert await client.submit(where, workers=["Alice"], allow_other_workers=True, pure=False) == "Alice"


async def test_locality_workers_by_host_and_address(alice_bob: Any) -> None:
    """locality.rst: ``workers='127.0.0.1'``, ``workers='127.0.0.1:55852'``, a list."""
    client, _, alice, _ = alice_bob
    by_host = client.map(where_with, range(6), workers="127.0.0.1")
    assert set(await client.gather(by_host)) <= {"Alice", "Bob"}
    location = alice.address.partition("://")[2]
    assert await client.submit(where_with, 1, workers=location) == "Alice"
    assert await client.submit(where_with, 2, workers=[alice.address, "10.9.9.9"]) == "Alice"


async def test_a_task_for_an_absent_worker_waits_and_says_so(alice_bob: Any) -> None:
    """locality.rst's restrictions are hard unless loose: the task waits."""
    client, s, _, _ = alice_bob
    future = client.submit(where, workers=["Carol"])
    with anyio.fail_after(5):
        # each look is a round trip to the scheduler; the answer changes within a few
        while "no-worker" not in (info := await client.scheduler_info())["tasks"]:
            pass
    assert "Carol" in info["no_worker"][future.key]
    assert future.status == "pending"
    async with Worker(s.address, name="Carol"):
        assert await future == "Carol"


async def test_locality_scatter_range_and_broadcast(alice_bob: Any) -> None:
    """locality.rst, "Data Scatter": ``client.scatter(range(10))`` gives ten
    futures; ``broadcast=True`` sends every item to every worker."""
    client, s, alice, bob = alice_bob
    futures = await client.scatter(range(10))
    assert isinstance(futures, list)
    assert await client.gather(futures) == list(range(10))
    holders = {addr for f in futures for addr in s.state.tasks[f.key].who_has}
    assert holders == {alice.address, bob.address}
    everywhere = await client.scatter([1, 2, 3], broadcast=True)
    for f in everywhere:
        assert s.state.tasks[f.key].who_has == {alice.address, bob.address}
    only_bob = await client.scatter({"x": 1}, workers=bob.address, broadcast=True)
    assert s.state.tasks[only_bob["x"].key].who_has == {bob.address}
    # any iterable: a generator, a set; hash=False gives new keys each time
    assert len(await client.scatter(i for i in range(3))) == 3
    a, b = await client.scatter([7], hash=False), await client.scatter([7], hash=False)
    assert a[0].key != b[0].key
    same = await client.scatter([7])
    assert same[0].key == (await client.scatter([7]))[0].key


# --------------------------------------------------------- Worker Resources


def process(d: int) -> tuple[str, int]:
    return where(), d * 2


def aggregate(results: list[tuple[str, int]]) -> tuple[str, int]:
    return where(), sum(r[1] for r in results)


async def test_resources_gpu_and_memory_example() -> None:
    """resources.rst, "Example": GPU tasks only on the GPU workers, the
    aggregate only where MEMORY=100e9 is."""
    async with (
        Scheduler() as s,
        Worker(s.address, nthreads=2, name="gpu1", resources={"GPU": 2}),
        Worker(s.address, nthreads=2, name="gpu2", resources="GPU=2"),
        Worker(s.address, nthreads=2, name="mem", resources={"MEMORY": 100e9}),
        Worker(s.address, nthreads=4, name="plain"),
        Client(s.address, asynchronous=True) as client,
    ):
        data = list(range(40))
        processed = [client.submit(process, d, resources={"GPU": 1}) for d in data]
        final = client.submit(aggregate, processed, resources={"MEMORY": 70e9})
        ran_on, total = await final
        assert (ran_on, total) == ("mem", sum(d * 2 for d in data))
        assert {w for w, _ in await client.gather(processed)} <= {"gpu1", "gpu2"}
        info = await client.scheduler_info()
        assert sorted(w["resources"].get("GPU", 0) for w in info["workers"].values()) == [0, 0, 2, 2]


_events: dict[str, threading.Event] = {}
_barriers: dict[str, threading.Barrier] = {}


def _together(name: str, i: int) -> bool:
    """Whether the two tasks of barrier ``name`` ran at the same time (the
    workers run in this process, so the barrier is shared)."""
    try:
        _barriers[name].wait(0.5)
    except threading.BrokenBarrierError:
        return False
    return True


def _new_barrier() -> str:
    name = uuid.uuid4().hex
    _barriers[name] = threading.Barrier(2)
    return name


def _new_event() -> str:
    name = uuid.uuid4().hex
    _events[name] = threading.Event()
    return name


async def test_resources_process_example_limits_concurrency() -> None:
    """resources.rst: ``--nthreads 2 --resources "process=1"``: at most one such
    task runs at a time on the worker; without resources both overlap."""
    async with Scheduler() as s, Worker(s.address, nthreads=2, resources="process=1"):
        async with Client(s.address, asynchronous=True) as client:
            name = _new_barrier()
            plain = client.map(_together, [name, name], [1, 2])
            assert await client.gather(plain) == [True, True]
            name = _new_barrier()
            limited = client.map(_together, [name, name], [1, 2], resources={"process": 1})
            assert await client.gather(limited) == [False, False]


async def test_resources_no_worker_has_them_waits_then_runs() -> None:
    """resources.rst, "What happens if no worker can satisfy a resource
    restriction?": the task waits, and runs once such a worker joins."""
    async with Scheduler() as s, Worker(s.address, resources={"GPU": 1}):
        async with Client(s.address, asynchronous=True) as client:
            future = client.submit(where, resources={"GPU": 2})
            with anyio.fail_after(5):
                while not (info := await client.scheduler_info())["no_worker"]:
                    pass  # each look is a round trip to the scheduler
            assert info["tasks"].get("no-worker") == 1
            assert "{'GPU': 2.0}" in info["no_worker"][future.key]
            async with Worker(s.address, name="big", resources={"GPU": 2}):
                assert await future == "big"


async def test_gpu_tasks_only_ever_run_on_the_worker_that_has_the_resource() -> None:
    """resources.rst: GPU-tagged tasks run only on the one worker with a GPU,
    however busy it is and however idle the others (stealing included)."""
    async with (
        Scheduler() as s,
        Worker(s.address, nthreads=2, name="cpu1"),
        Worker(s.address, nthreads=2, name="cpu2"),
        Worker(s.address, nthreads=1, name="the-gpu", resources={"GPU": 1}),
        Client(s.address, asynchronous=True) as client,
    ):
        gpu = client.map(where_with, range(60), resources={"GPU": 1})
        plain = client.map(where_with, range(100, 160))
        assert set(await client.gather(gpu)) == {"the-gpu"}
        assert set(await client.gather(plain)) <= {"cpu1", "cpu2", "the-gpu"}


def test_local_cluster_and_nanny_take_resources() -> None:
    """``LocalCluster(resources=...)`` and ``Nanny(resources=...)`` give every
    worker process those resources (the CLI's ``--resources`` string too)."""
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None, resources={"GPU": 1}) as cluster:
        with Client(cluster) as client:
            (worker,) = client.scheduler_info()["workers"].values()
            assert worker["resources"] == {"GPU": 1.0}
            assert client.submit(operator.add, 1, 2, resources={"GPU": 1}).result() == 3
    assert Nanny("tcp://127.0.0.1:1", resources="GPU=2,MEM=10e9").resources == {"GPU": 2.0, "MEM": 1e10}
    assert parse_resources("GPU=2,MEM=10e9") == {"GPU": 2.0, "MEM": 10e9}
    with pytest.raises(ValueError, match="GPU=2,MEM=10e9"):
        parse_resources("GPU")
    with pytest.raises(ValueError, match="needs a number"):
        parse_resources("GPU=lots")


# ------------------------------------------------------------- retries


_attempts: dict[str, itertools.count[int]] = {}


def flaky(name: str, failures: int) -> str:
    """Raise the first ``failures`` times it runs (per name), then succeed."""
    n = next(_attempts.setdefault(name, itertools.count()))
    if n < failures:
        raise ValueError(f"{name} failed attempt {n}")
    return f"{name} ok after {n}"


async def test_retries_rerun_a_failing_task(alice_bob: Any) -> None:
    client, _, _, _ = alice_bob
    r2, r1, m1, m2 = (uuid.uuid4().hex for _ in range(4))
    assert await client.submit(flaky, r2, 2, retries=2) == f"{r2} ok after 2"
    with pytest.raises(ValueError, match=f"{r1} failed attempt 1"):
        await client.submit(flaky, r1, 2, retries=1)
    results = await client.gather(client.map(flaky, [m1, m2], [1, 1], retries=1))
    assert results == [f"{m1} ok after 1", f"{m2} ok after 1"]


def test_future_retry_reruns_an_erred_task_and_its_erred_dependencies() -> None:
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            base = client.submit(flaky, "dep", 1)
            top = client.submit(lambda x: x.upper(), base)
            with pytest.raises(ValueError, match="dep failed attempt 0"):
                top.result()
            assert top.status == "error"
            top.retry()
            assert top.result() == "DEP OK AFTER 1"
            assert base.result() == "dep ok after 1"


async def test_future_retry_under_the_async_client(alice_bob: Any) -> None:
    client, _, _, _ = alice_bob
    name = uuid.uuid4().hex
    future = client.submit(flaky, name, 1)
    await wait([future])
    assert future.status == "error"
    await future.retry()
    assert await future == f"{name} ok after 1"


# -------------------------------------------------------- fifo_timeout


_order = itertools.count()


def gate(name: str) -> None:
    _events[name].wait(10)


def ticket(i: int) -> int:
    return next(_order)


async def test_fifo_timeout_keeps_submission_order() -> None:
    """Dask promises first-in first-out for submissions further apart than
    ``fifo_timeout``; trioclust keeps submission order for any value."""
    async with Scheduler() as s, Worker(s.address, nthreads=1):
        async with Client(s.address, asynchronous=True) as client:
            name = _new_event()
            blocker = client.submit(gate, name)
            futures = [
                client.submit(ticket, i, fifo_timeout=timeout, pure=False)
                for i, timeout in enumerate(["0ms", "60s", 0, 1.5, "100ms"] * 4)
            ]
            _events[name].set()
            await blocker
            tickets = await client.gather(futures)
            assert tickets == sorted(tickets)
            with pytest.raises(ValueError, match="fifo_timeout"):
                client.submit(ticket, 1, fifo_timeout="soon")
            with pytest.raises(ValueError, match="fifo_timeout"):
                client.map(ticket, [1], fifo_timeout=-1)


# ---------------------------------------------------------- work stealing


def slow(i: int, data: Any) -> str:
    threading.Event().wait(0.2)  # the task's own work: 0.2 s
    return where()


async def test_a_worker_that_joins_mid_graph_steals_queued_tasks() -> None:
    """200 tasks of 0.2 s, all on one worker (their input lives there); a second
    worker joins and runs some of them within 2 s (stealing is on by default)."""
    async with Scheduler() as s, Worker(s.address, nthreads=1, name="first"):
        async with Client(s.address, asynchronous=True) as client:
            (data,) = await client.scatter([list(range(1000))])
            futures = client.map(slow, range(200), data=data, pure=False)
            async with Worker(s.address, nthreads=1, name="late"):
                with anyio.fail_after(2):
                    async for future in as_completed(futures):
                        if await future == "late":
                            break
                await client.cancel(futures)


def test_placement_options_are_checked() -> None:
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            with pytest.raises(TypeError, match="workers="):
                client.submit(where, workers=[1])
            with pytest.raises(ValueError, match="resources="):
                client.submit(where, resources={"GPU": "one"})
            with pytest.raises(ValueError, match="retries="):
                client.submit(where, retries=-1)
