"""Results that cannot travel end in a clear error, never a hang.

A result that will not pickle on the worker becomes the task's error
(``TypeError: Could not serialize object of type ...``, as Dask's
``distributed/protocol/serialize.py`` raises); one whose unpickling fails in
the client raises that error at ``result()``/``gather`` for that future only,
small (inline) or large (out-of-band frames); no ExceptionGroup ever reaches
the user. Each under the synchronous client and the asynchronous one (trio
and asyncio).
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from trioclust import Client, Scheduler, Worker
from trioclust.testing.cluster import cluster


def _refuse_to_load(payload: Any = None) -> Any:
    raise RuntimeError("this value refuses to be unpickled here")


class LoadFails:
    """Pickles fine; unpickling raises RuntimeError. ``size`` bytes travel out of band."""

    def __init__(self, size: int = 0) -> None:
        self.payload = bytearray(size)

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self.payload:
            return (_refuse_to_load, (pickle.PickleBuffer(self.payload),))
        return (_refuse_to_load, ())


def returns_lock() -> Any:
    return threading.Lock()


def returns_deep() -> Any:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    return value


def one_bad(i: int, bad: int, size: int) -> Any:
    return LoadFails(size) if i == bad else i


LARGE = 4 * 2**20  # past worker.inline-result-limit: fetched from the worker in frames


# ------------------------------------------------------------------ synchronous
@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with cluster(n_workers=2, nthreads=2) as (scheduler_address, _):
        yield scheduler_address


@pytest.fixture(autouse=True)
def check_leaks() -> None:
    """The module's cluster outlives each test: checked as a whole when it closes."""


def test_sync_unpicklable_result_is_the_tasks_type_error(address: str) -> None:
    with Client(address) as client:
        future = client.submit(returns_lock)
        with pytest.raises(TypeError, match="Could not serialize object of type lock"):
            future.result(timeout=10)
        assert future.status == "error"
        assert client.submit(lambda: 1 + 1).result(timeout=10) == 2


def test_sync_too_deep_result_is_a_clear_type_error(address: str) -> None:
    with Client(address) as client:
        future = client.submit(returns_deep)
        with pytest.raises(TypeError, match=r"Could not serialize object of type list.*too deep"):
            future.result(timeout=10)


@pytest.mark.parametrize("size", [0, LARGE], ids=["inline", "frames"])
def test_sync_unloadable_result_fails_only_its_future(address: str, size: int) -> None:
    with Client(address) as client:
        futures = client.map(one_bad, range(200), bad=57, size=size)
        with pytest.raises(RuntimeError, match="refuses to be unpickled"):
            futures[57].result(timeout=10)
        others = futures[:57] + futures[58:]
        assert client.gather(others) == [i for i in range(200) if i != 57]
        with pytest.raises(RuntimeError, match="refuses to be unpickled"):
            client.gather(futures)
        assert client.gather(futures, errors="skip") == [i for i in range(200) if i != 57]


def payload_size(value: Any) -> int:
    return len(value.payload)


@pytest.mark.parametrize("size", [0, LARGE], ids=["inline", "frames"])
def test_sync_a_dependency_that_will_not_unpickle_errs_its_dependent(address: str, size: int) -> None:
    """A result that pickles where it was made but whose unpickling raises on
    the worker that fetches it for a dependent: the dependent errs with that
    error (as in Dask, where the failed fetch fails the task), at once; both
    workers live on and serve the next tasks."""
    with Client(address) as client:
        workers = sorted(client.scheduler_info()["workers"])
        made = client.submit(LoadFails, size, workers=[workers[0]], pure=False)
        used = client.submit(payload_size, made, workers=[workers[1]], pure=False)
        with pytest.raises(RuntimeError, match="refuses to be unpickled"):
            used.result(timeout=30)
        assert sorted(client.scheduler_info()["workers"]) == workers
        assert client.gather(client.map(abs, [-1, -2], workers=[workers[1]])) == [1, 2]


# ----------------------------------------------------------------- asynchronous


@pytest.fixture
async def aclient() -> AsyncIterator[Client]:
    async with Scheduler() as s, Worker(s.address, nthreads=2), Worker(s.address):
        async with Client(s.address, asynchronous=True) as client:
            yield client


@pytest.mark.anyio
async def test_async_unpicklable_and_too_deep_results_raise_type_error(aclient: Client) -> None:
    with pytest.raises(TypeError, match="Could not serialize object of type lock"):
        await aclient.submit(returns_lock)
    with pytest.raises(TypeError, match="too deep"):
        await aclient.gather([aclient.submit(returns_deep)])
    assert await aclient.submit(lambda: 3) == 3


@pytest.mark.anyio
@pytest.mark.parametrize("size", [0, LARGE], ids=["inline", "frames"])
async def test_async_unloadable_result_fails_only_its_future(aclient: Client, size: int) -> None:
    futures = aclient.map(one_bad, range(200), bad=3, size=size)
    with pytest.raises(RuntimeError, match="refuses to be unpickled"):  # not an ExceptionGroup
        await futures[3]
    with pytest.raises(RuntimeError, match="refuses to be unpickled"):
        await aclient.gather(futures)
    assert await aclient.gather(futures[:3] + futures[4:]) == [i for i in range(200) if i != 3]
