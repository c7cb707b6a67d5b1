"""Actors: Dask's "Actors" page (docs/source/actors.rst) and its test suite's
ParameterServer (distributed/tests/test_actor.py), under the synchronous client
and the asynchronous one under trio and asyncio."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import anyio
import anyio.lowlevel
import pytest

from trioclust import Actor, ActorFuture, ActorLostError, Client, Future, Scheduler, Worker
from trioclust.testing.cluster import cluster


class Counter:
    """A simple class to manage an incrementing counter (the Actors page)."""

    n = 0

    def __init__(self) -> None:
        self.n = 0

    def increment(self) -> int:
        self.n += 1
        return self.n

    def add(self, x: int) -> int:
        self.n += x
        return self.n


class ParameterServer:
    """distributed/tests/test_actor.py's parameter server."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}

    def put(self, key: str, value: object) -> None:
        self.data[key] = value

    def get(self, key: str) -> object:
        return self.data[key]


class Picky:
    def __init__(self, start: int = 0) -> None:
        self.start = start
        self.threads: set[int] = set()

    def fail(self) -> None:
        raise KeyError("no such thing")

    def slow_then_record(self, i: int) -> int:
        self.threads.add(threading.get_ident())
        return i + self.start

    async def later(self, x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x * 2

    def thread_count(self) -> int:
        return len(self.threads)


# ------------------------------------------------------------ synchronous


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with cluster(n_workers=2) as (address, _), Client(address) as c:
        yield c


@pytest.fixture(autouse=True)
def check_leaks() -> None:
    return  # the module's cluster outlives single tests


def test_actors_page_counter_example(client: Client) -> None:
    """docs/source/actors.rst, "Example": submit a class with actor=True."""
    future = client.submit(Counter, actor=True)  # Create a Counter on a worker
    assert isinstance(future, Future)
    counter = future.result()  # Get back a pointer to that object
    assert isinstance(counter, Actor)
    assert repr(counter) == f"<Actor: Counter, key={counter.key}>"
    assert counter.key.startswith("Counter-")
    future2 = counter.increment()  # Call remote method
    assert isinstance(future2, ActorFuture)
    assert future2.result() == 1
    assert counter.add(10).result() == 11
    assert dir(counter) == ["add", "increment", "n"]  # "Create an Actor"
    assert counter.n == 11  # "Access Attributes": blocks until finished


def _increment_n_times(counter: Actor, n: int) -> int:
    for _ in range(n):
        counter.increment().result()
    return int(counter.n)


def test_an_actor_passed_to_tasks_is_called_from_their_workers(client: Client) -> None:
    """"Execution on the Worker": "If you do this from a worker this
    communication is direct": a handle given to tasks (on both workers)
    calls the one instance, which sees every call."""
    counter = client.submit(Counter, actor=True).result()
    futures = client.map(_increment_n_times, [counter] * 4, [5] * 4, pure=False)
    seen = client.gather(futures)
    assert counter.n == 20
    assert max(seen) == 20
    assert all(5 <= n <= 20 for n in seen)
    # the instance lives on while the client's handle does
    assert counter.increment().result() == 21


def test_actor_calls_run_in_order_on_one_thread(client: Client) -> None:
    """"Execution on the Worker": one thread for actors, calls in order."""
    counter = client.submit(Counter, actor=True).result()
    futures = [counter.increment() for _ in range(200)]
    assert [f.result() for f in futures] == list(range(1, 201))
    assert counter.n == 200
    picky = client.submit(Picky, 5, actor=True).result()
    results = [picky.slow_then_record(i) for i in range(50)]
    assert [r.result() for r in results] == [i + 5 for i in range(50)]
    assert picky.thread_count().result() == 1


def test_actor_method_errors_raise_their_own_type(client: Client) -> None:
    picky = client.submit(Picky, actor=True).result()
    future = picky.fail()
    with pytest.raises(KeyError, match="no such thing"):
        future.result()
    assert future.done()
    assert picky.later(21).result() == 42  # coroutine methods run on the worker's loop
    with pytest.raises(AttributeError):
        picky.missing  # noqa: B018


def test_parameter_server(client: Client) -> None:
    """test_actor.py's ParameterServer: put and get values, large ones too."""
    server = client.submit(ParameterServer, actor=True).result()
    big = bytes(range(256)) * 4000
    server.put("x", big).result()
    server.put("y", [1, 2, 3])
    assert server.get("y").result() == [1, 2, 3]
    assert server.get("x").result() == big
    with pytest.raises(KeyError):
        server.get("z").result()


def test_map_actors_and_gather(client: Client) -> None:
    futures = client.map(Picky, [1, 2, 3], actor=True)
    actors = client.gather(futures)
    assert all(isinstance(a, Actor) for a in actors)
    assert [a.slow_then_record(10).result() for a in actors] == [11, 12, 13]
    assert len({a.key for a in actors}) == 3


def test_the_actor_lives_while_its_handle_does(client: Client) -> None:
    counter = client.submit(Counter, actor=True).result()
    key = counter.key
    counter.increment().result()

    def held(dask_worker: Worker) -> list[str]:
        return sorted(dask_worker.actors)

    assert any(key in keys for keys in client.run(held).values())
    del counter  # the handle held the key's only future
    gc.collect()
    # the release goes out lazily (comm.lazy-linger); each run is a round trip
    for _ in range(1000):
        if not any(key in keys for keys in client.run(held).values()):
            break
    assert not any(key in keys for keys in client.run(held).values())


# ----------------------------------------------------------- asynchronous


@pytest.mark.anyio
async def test_actors_page_async_example(servers: tuple[Scheduler, Worker, Worker]) -> None:
    """docs/source/actors.rst, "Calling from coroutines and async/await"."""
    s, a, b = servers
    async with Client(s.address, asynchronous=True) as client:
        counter = await client.submit(Counter, actor=True)
        assert isinstance(counter, Actor)
        await counter.increment()
        n = await counter.n
        assert n == 1
        assert isinstance(a.actors.get(counter.key) or b.actors.get(counter.key), Counter)
        # distributed/tests/test_actor.py::test_client_actions
        async with anyio.create_task_group() as tg:
            tg.start_soon(counter.increment().result)
            tg.start_soon(counter.increment().result)
        assert await counter.n == 3
        assert await counter.add(10) == 13
        picky = await client.submit(Picky, actor=True)
        with pytest.raises(KeyError, match="no such thing"):
            await picky.fail()
        assert await picky.later(4) == 8


@pytest.mark.anyio
async def test_parameter_server_async(servers: tuple[Scheduler, Worker, Worker]) -> None:
    """test_actor.py::test_numpy_roundtrip, with bytes for the array."""
    s, _, _ = servers
    async with Client(s.address, asynchronous=True) as client:
        server = await client.submit(ParameterServer, actor=True)
        x = bytes(range(256)) * 40
        await server.put("x", x)
        assert await server.get("x") == x


@pytest.mark.anyio
async def test_a_dead_workers_actors_are_lost(servers: tuple[Scheduler, Worker, Worker]) -> None:
    s, a, b = servers
    async with Client(s.address, asynchronous=True) as client:
        counter = await client.submit(Counter, actor=True)
        assert await counter.increment() == 1
        holder = a if counter.key in a.actors else b
        await holder.close()
        with pytest.raises(ActorLostError, match="holding actor"):
            await counter.increment()
