"""The synchronous Client, as a script or a notebook uses it."""

from __future__ import annotations

import asyncio
import operator
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from trioclust import CancelledError, Client, as_completed, wait
from trioclust.testing.cluster import cluster


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with cluster(n_workers=2) as (scheduler_address, _):
        yield scheduler_address


@pytest.fixture(autouse=True)
def check_leaks() -> None:
    # the module-wide cluster outlives single tests; its own teardown is checked
    # by test_cluster_and_client_leave_nothing_behind
    return


def inc(x: int) -> int:
    return x + 1


def test_submit_map_gather_scatter(address: str) -> None:
    with Client(address) as client:
        assert client.submit(inc, 1).result() == 2
        futures = client.map(inc, range(50))
        assert client.gather(futures) == list(range(1, 51))
        data = client.scatter([1, 2, 3])
        assert client.gather(client.map(inc, data)) == [2, 3, 4]
        assert client.submit(operator.add, *data[:2]).result() == 3
        assert client.gather(client.scatter({"x": 7})) == {"x": 7}


async def forever() -> None:
    import trio

    await trio.sleep_forever()


def test_dependent_graph_of_a_thousand_tasks(address: str) -> None:
    with Client(address) as client:
        layer = client.map(inc, range(250))
        for _ in range(3):
            layer = [client.submit(operator.add, a, 1) for a in layer]
        total = client.submit(sum, layer)
        assert total.result() == sum(range(250)) + 4 * 250


def test_wait_as_completed_and_errors(address: str) -> None:
    with Client(address) as client:
        futures = client.map(inc, range(10))
        done, not_done = wait(futures)
        assert len(done) == 10
        assert not not_done
        assert sorted(f.result() for f in as_completed(client.map(inc, range(5)))) == [1, 2, 3, 4, 5]
        bad = client.submit(operator.truediv, 1, 0)
        with pytest.raises(ZeroDivisionError):
            bad.result()
        assert isinstance(bad.exception(), ZeroDivisionError)
        pairs = list(as_completed([bad, client.submit(inc, 1)], with_results=True, raise_errors=False))
        assert sorted(type(r).__name__ for _, r in pairs) == ["ZeroDivisionError", "int"]
        assert client.gather([bad, client.submit(inc, 2)], errors="skip") == [3]


def test_cancel_and_timeout(address: str) -> None:
    with Client(address) as client:
        future = client.submit(forever, pure=False)
        with pytest.raises(TimeoutError):
            future.result(timeout=0.05)
        client.cancel([future])
        assert future.cancelled()
        with pytest.raises(CancelledError):
            future.result()


def test_works_inside_a_running_asyncio_loop(address: str) -> None:
    """A Jupyter cell: an asyncio loop runs in this thread while the sync client is used."""

    async def cell() -> int:
        with Client(address) as client:
            return int(client.submit(inc, 9).result())

    assert asyncio.run(cell()) == 10


def test_client_repr_and_info(address: str) -> None:
    with Client(address) as client:
        assert "workers=2" in repr(client)
        assert client.scheduler_info()["address"] == address
        assert len(client.run(lambda: 1)) == 2


def test_cluster_and_client_leave_nothing_behind() -> None:
    before = {t.ident for t in threading.enumerate()}
    with cluster(n_workers=1) as (addr, _), Client(addr) as client:
        assert client.submit(inc, 1).result() == 2
    after = {t.ident for t in threading.enumerate() if not t.name.startswith(("Trio thread", "AnyIO"))}
    assert after <= before


def test_futures_that_live_only_in_the_arguments(address: str) -> None:
    with Client(address) as client:
        assert client.submit(sum, client.map(inc, range(10))).result() == sum(range(1, 11))
        assert client.submit(sum, [client.submit(inc, i) for i in range(5)]).result() == 15


def until_file(path: str) -> int:
    import os
    import time

    while not os.path.exists(path):  # the task polls; the test itself waits on nothing
        time.sleep(0.01)
    return 0


def test_threads_waiting_on_one_future_all_get_its_result(address: str, tmp_path: Path) -> None:
    with Client(address) as client:
        go = tmp_path / "go"
        future = client.submit(inc, client.submit(until_file, str(go), pure=False))
        got: list[int] = []
        threads = [threading.Thread(target=lambda: got.append(future.result(timeout=60))) for _ in range(4)]
        for thread in threads:
            thread.start()
        go.touch()  # the threads wait in result() (or are about to): release the task
        for thread in threads:
            thread.join(timeout=60)
        assert got == [1, 1, 1, 1]
        seen: list[int] = []
        done = threading.Event()
        future.add_done_callback(lambda f: (seen.append(f.result()), done.set()))  # on the loop thread
        assert done.wait(30)
        assert seen == [1]
