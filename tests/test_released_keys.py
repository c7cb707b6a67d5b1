"""``gather``/``result`` of a key released on the scheduler raises at once.

As in Dask (``FutureCancelledError`` from ``Client.gather`` of a future whose
key the scheduler no longer holds for this client), instead of waiting for
a fetch that cannot succeed. Under the synchronous and asynchronous clients.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from trioclust import Client, FutureCancelledError, Scheduler, Worker
from trioclust.core import events as ev
from trioclust.testing.cluster import cluster


def big(i: int) -> bytes:
    return bytes(2**20) + bytes([i])  # past worker.inline-result-limit: fetched on demand


def release_on_scheduler(key: str, client: str, dask_scheduler: Any) -> None:
    """The scheduler drops ``client``'s want of ``key`` (as if released behind its back)."""
    dask_scheduler._handle(ev.ReleaseKeys(client=client, keys=(key,), stimulus_id="test-release"))


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with cluster(n_workers=1, nthreads=1) as (scheduler_address, _):
        yield scheduler_address


@pytest.fixture(autouse=True)
def check_leaks() -> None:
    """The module's cluster outlives each test: checked as a whole when it closes."""


def test_sync_gather_and_result_of_a_released_key_raise_at_once(address: str) -> None:
    with Client(address) as client:
        futures = client.map(big, range(3))
        for f in futures:
            f.result(timeout=10)  # large: the value is fetched, not kept by the future
        released, kept = futures[0], futures[1:]
        client.run_on_scheduler(release_on_scheduler, released.key, client.id)
        start = time.monotonic()
        with pytest.raises(FutureCancelledError, match="released"):
            client.gather(futures, errors="raise")
        with pytest.raises(FutureCancelledError):
            released.result(timeout=10)
        assert time.monotonic() - start < 5  # not comm.timeouts.connect (10 s)
        assert released.status == "cancelled"
        assert [len(v) for v in client.gather(kept)] == [2**20 + 1] * 2
        # a new submission of the same key computes afresh
        assert client.submit(big, 0).result(timeout=10)[-1] == 0


@pytest.fixture
async def aclient() -> AsyncIterator[Client]:
    async with Scheduler() as s, Worker(s.address):
        async with Client(s.address, asynchronous=True) as client:
            yield client


@pytest.mark.anyio
async def test_async_gather_of_a_released_key_raises_at_once(aclient: Client) -> None:
    future = aclient.submit(big, 7)
    assert len(await future) == 2**20 + 1
    await aclient.run_on_scheduler(release_on_scheduler, future.key, aclient.id)
    with pytest.raises(FutureCancelledError, match="released"):
        await aclient.gather([future])
    with pytest.raises(FutureCancelledError):
        await future
