"""Client operations with Dask's names: the Client API reference's examples
(distributed/client.py docstrings) for who_has, has_what, nthreads/ncores,
as_completed(...).batches(), Client.sync and upload_file, under the
synchronous client and the asynchronous one under trio and asyncio."""

from __future__ import annotations

import sys
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from trioclust import Client, Scheduler, Worker, as_completed, wait
from trioclust.testing.cluster import cluster


def inc(x: int) -> int:
    return x + 1


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with cluster(n_workers=2) as (address, _), Client(address) as c:
        yield c


@pytest.fixture(autouse=True)
def check_leaks() -> None:
    return  # the module's cluster outlives single tests


def test_who_has_has_what_nthreads(client: Client) -> None:
    """Client.who_has / has_what / nthreads docstring examples."""
    x, y, z = client.map(inc, [1, 2, 3])
    wait([x, y, z])
    everything = client.who_has()
    assert {x.key, y.key, z.key} <= set(everything)
    workers = set(client.nthreads())
    assert len(workers) == 2
    assert all(set(holders) <= workers and holders for k, holders in everything.items() if k in (x.key, y.key))
    assert set(client.who_has([x, y])) == {x.key, y.key}
    has_what = client.has_what()
    assert set(has_what) == workers
    assert sorted(k for keys in has_what.values() for k in keys if k in (x.key, y.key, z.key)) == sorted(
        [x.key, y.key, z.key]
    )
    one = next(iter(workers))
    assert list(client.has_what(one)) == [one]
    assert client.nthreads() == {w: 1 for w in workers}
    assert client.ncores(workers=[one]) == {one: 1}


def test_as_completed_batches(client: Client) -> None:
    """as_completed.batches docstring: every finished future at once."""
    futures = client.map(inc, range(10))
    seen = []
    for batch in as_completed(futures).batches():
        assert batch
        results = client.gather(batch)
        seen.extend(results)
    assert sorted(seen) == list(range(1, 11))
    ac = as_completed(client.map(inc, range(5)), with_results=True)
    pairs = [pair for batch in ac.batches() for pair in batch]
    assert sorted(result for _, result in pairs) == [1, 2, 3, 4, 5]
    assert ac.is_empty()
    assert ac.count() == 0


def test_as_completed_add_update_count_clear(client: Client) -> None:
    """as_completed's docstring: add futures while iterating."""
    ac = as_completed([client.submit(inc, 1)])
    ac.update([client.submit(inc, 2)])
    assert ac.count() == 2
    results = []
    for future in ac:
        result = future.result()
        results.append(result)
        if result < 4:
            ac.add(client.submit(inc, result + 10))
    assert sorted(results) == [2, 3, 13, 14]
    ac = as_completed(client.map(inc, [100, 101]))
    ac.clear()
    assert ac.is_empty()
    assert list(ac) == []


def test_client_sync_runs_a_coroutine_function_on_the_loop(client: Client) -> None:
    async def add_later(x: int, y: int = 1) -> int:
        await anyio.lowlevel.checkpoint()
        return x + y

    assert client.sync(add_later, 1, y=2) == 3


def _module_name() -> str:
    return f"uploaded_{uuid.uuid4().hex[:8]}"


def test_upload_file_py_reaches_every_worker_and_new_ones(client: Client, tmp_path: Path) -> None:
    """Client.upload_file docstring: upload, then map a function from it."""
    name = _module_name()
    path = tmp_path / f"{name}.py"
    path.write_text("def myfunc(x):\n    return x * 10\n")
    client.upload_file(str(path))

    def use(x: int) -> int:
        import importlib

        return int(importlib.import_module(name).myfunc(x))

    assert client.gather(client.map(use, range(4), pure=False)) == [0, 10, 20, 30]

    def loaded(dask_worker: Worker) -> bool:
        return name in sys.modules

    assert all(client.run(loaded).values())
    # a new version replaces the old one (reloaded)
    path.write_text("def myfunc(x):\n    return x * 100\n")
    client.upload_file(path)
    assert client.gather(client.map(use, range(2), pure=False)) == [0, 100]


def test_upload_file_zip_and_a_failing_import(client: Client, tmp_path: Path) -> None:
    name = _module_name()
    archive = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{name}/__init__.py", "VALUE = 42\n")
    client.upload_file(archive)

    def value() -> int:
        import importlib

        return int(importlib.import_module(name).VALUE)

    assert client.submit(value, pure=False).result() == 42
    bad = tmp_path / f"{_module_name()}.py"
    bad.write_text("raise ZeroDivisionError('on import')\n")
    with pytest.raises(ZeroDivisionError, match="on import"):
        client.upload_file(bad)


# ----------------------------------------------------------- asynchronous


@pytest.fixture
async def servers() -> AsyncIterator[Scheduler]:
    async with Scheduler() as s, Worker(s.address, nthreads=2), Worker(s.address):
        yield s


@pytest.mark.anyio
async def test_operations_async(servers: Scheduler, tmp_path: Path) -> None:
    s = servers
    async with Client(s.address, asynchronous=True) as client:
        x, y = client.map(inc, [1, 2])
        await wait([x, y])
        who = await client.who_has([x])
        assert list(who) == [x.key]
        assert who[x.key]
        assert sorted((await client.nthreads()).values()) == [1, 2]
        assert set(await client.has_what()) == set(s.state.workers)
        batches = [b async for b in as_completed(client.map(inc, range(6))).batches()]
        assert all(batches)
        assert sum(len(b) for b in batches) == 6

        await client.replicate([x])
        assert len((await client.who_has([x]))[x.key]) == 2
        await client.rebalance([x, y])

        async def double(v: int) -> int:
            return 2 * v

        assert await client.sync(double, 21) == 42
        name = _module_name()
        path = tmp_path / f"{name}.py"
        path.write_text("WHERE = 'uploaded'\n")
        await client.upload_file(path)
        # a worker that joins later gets it when it registers
        async with Worker(s.address) as late:
            assert late._upload_directory is not None
            assert (Path(late._upload_directory) / f"{name}.py").read_text() == "WHERE = 'uploaded'\n"


def test_replicate_docstring_examples(client: Client) -> None:
    """Client.replicate docstring: send to all workers, then n=1 reduces replicas."""
    x = client.submit(inc, 41, pure=False)
    client.replicate([x])  # send to all workers
    workers = set(client.nthreads())
    assert set(client.who_has([x])[x.key]) == workers
    client.replicate([x], n=1)  # reduce replications
    assert len(client.who_has([x])[x.key]) == 1
    one = sorted(workers)[0]
    client.replicate([x], workers=[one])  # send to specific
    assert one in client.who_has([x])[x.key]
    assert x.result() == 42


def test_rebalance_evens_out_the_workers(client: Client) -> None:
    """Client.rebalance: data scattered onto one worker spreads over both."""
    one, other = sorted(client.nthreads())
    futures = client.scatter([bytes([i]) * 1000 for i in range(8)], workers=[one], hash=False)
    assert all(client.who_has(futures)[f.key] == [one] for f in futures)
    client.rebalance(futures)
    where = client.who_has(futures)
    on_other = [f for f in futures if where[f.key] == [other]]
    assert len(on_other) == 4
    assert all(len(where[f.key]) == 1 for f in futures)
    assert client.gather(futures) == [bytes([i]) * 1000 for i in range(8)]
