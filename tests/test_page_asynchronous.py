"""Dask's "Asynchronous Operation" page (docs/source/asynchronous.rst), each
example as the page shows it, with only the import changed: the asynchronous
client under trio and asyncio, and the synchronous client with
``Client.sync``.

Clusters are started with ``dashboard_address=None`` (see
test_page_quickstart.py) and ``processes=False``: the page is about the
client, and in-process workers keep the tests quick.
"""

from __future__ import annotations

import asyncio

import dask.array as da
import numpy as np
import pytest

from trioclust import Client, Event, Future, Variable

pytestmark = pytest.mark.anyio

CLUSTER = {"processes": False, "n_workers": 2, "dashboard_address": None}


async def test_basic_operation() -> None:
    """"Basic Operation": ``await Client(asynchronous=True)``, submit without
    awaiting, await the future, or await ``client.gather``."""
    client = await Client(asynchronous=True, **CLUSTER)
    try:
        future = client.submit(lambda x: x + 1, 10)
        result = await future
        assert result == 11
        result = await client.gather(future)
        assert result == 11
    finally:
        await client.close()


async def test_compute_a_collection_in_async_with() -> None:
    """The note's example: ``await client.compute(arr.mean())``."""
    async with Client(asynchronous=True, **CLUSTER) as client:
        arr = da.random.random((1000, 1000), chunks=(1000, 100))
        mean = await client.compute(arr.mean())
        assert 0.49 < float(mean) < 0.51
        assert isinstance(mean, np.floating)


async def f() -> int:
    """The page's self-contained "Example"."""
    client = await Client(asynchronous=True, **CLUSTER)
    future = client.submit(lambda x: x + 1, 10)
    result = await future
    await client.close()
    return result


async def test_the_example_under_the_running_loop() -> None:
    assert await f() == 11


def test_the_example_with_asyncio_run_until_complete() -> None:
    """"Or use asyncio": ``run_until_complete(f())`` (on a new loop:
    ``asyncio.get_event_loop()`` without one is deprecated)."""
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(f()) == 11
    finally:
        loop.close()


def test_an_async_function_with_a_synchronous_client() -> None:
    """``client.sync(f)`` with ``asynchronous=True`` at each method call."""
    with Client(**CLUSTER) as client:  # normal blocking client

        async def f() -> int:
            future = client.submit(lambda x: x + 1, 10)
            result = await client.gather(future, asynchronous=True)
            return result

        assert client.sync(f) == 11

        # the other methods that take ``asynchronous=`` in Dask's Client
        divisor = Variable("divisor")
        divisor.set(0)

        def divide(x: int) -> int:
            return x // int(Variable("divisor").get())

        async def first() -> tuple[list[Future], Future, Future]:
            scattered = await client.scatter([5], asynchronous=True)
            slow = client.submit(lambda name: Event(name).wait(), "never-set")
            await client.cancel(slow, asynchronous=True)
            flaky = client.submit(divide, 10)
            assert await client.gather([flaky], errors="skip", asynchronous=True) == []
            return scattered, slow, flaky

        scattered, slow, flaky = client.sync(first)
        assert slow.cancelled()
        assert flaky.status == "error"
        divisor.set(2)

        async def second() -> list[int]:
            await client.retry(flaky, asynchronous=True)
            return list(await client.gather([*scattered, flaky], asynchronous=True))

        assert client.sync(second) == [5, 5]
