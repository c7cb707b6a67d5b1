"""Dask's "Quickstart" page (docs/source/quickstart.rst), each example as the
page shows it, with only the import changed. The page shows the synchronous
client only.

Every cluster here is started with ``dashboard_address=None``: the page's
``Client()`` serves a dashboard on port 8787, which another program on a
shared test machine may hold (the fallback port's warning is an error here).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

import cloudpickle
import pytest

from trioclust import Client, Future, Scheduler, Worker

# worker processes cannot import this module: its functions travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x: int) -> int:
    return x ** 2


def neg(x: int) -> int:
    return -x


def map_submit_gather(client: Client) -> None:
    """"Map and Submit Functions" and "Gather"."""
    A = client.map(square, range(10))
    B = client.map(neg, A)
    total = client.submit(sum, B)
    assert total.result() == -285
    assert re.fullmatch(r"<Future: finished, type: int, key: sum-[0-9a-f]+>", repr(total))
    assert total.key.startswith("sum-")
    assert total.result() == -285  # result for single future
    assert client.gather(A) == [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]  # gather for many futures


@pytest.fixture(scope="module")
def easy_client() -> Iterator[Client]:
    """"Setup Dask.distributed the Easy Way": ``Client()`` starts a local cluster."""
    with Client(dashboard_address=None) as client:
        yield client


@pytest.fixture(autouse=True)
def check_leaks() -> None:
    return  # the module's cluster outlives single tests (its own teardown checks)


def test_easy_way_client_starts_a_local_cluster(easy_client: Client) -> None:
    assert easy_client.cluster is not None
    assert repr(easy_client).startswith("<Client: 'tcp://127.0.0.1:")
    assert len(easy_client.scheduler_info()["workers"]) >= 1


def test_map_submit_and_gather(easy_client: Client) -> None:
    map_submit_gather(easy_client)


def test_restart(easy_client: Client) -> None:
    """"Restart": reset the cluster state; the cluster is usable after."""
    before = len(easy_client.scheduler_info()["workers"])
    future = easy_client.submit(square, 3)
    assert future.result() == 9
    easy_client.restart()
    assert future.status == "cancelled"
    assert len(easy_client.scheduler_info()["workers"]) == before
    map_submit_gather(easy_client)


def test_hard_way_client_at_an_address_without_a_scheme() -> None:
    """"Setup Dask.distributed the Hard Way": a scheduler, three workers, and
    ``Client('127.0.0.1:8786')`` (here the port the scheduler got)."""
    import trio

    async def main() -> None:
        async with Scheduler() as s, Worker(s.address), Worker(s.address), Worker(s.address):
            address = s.address.removeprefix("tcp://")  # "127.0.0.1:port", as on the page
            client = await trio.to_thread.run_sync(Client, address)
            try:
                await trio.to_thread.run_sync(map_submit_gather, client)
                assert isinstance(client.submit(square, 2), Future)
            finally:
                await trio.to_thread.run_sync(client.close)

    trio.run(main)
