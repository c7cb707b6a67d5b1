"""An actor call's short path (client/actors.py, runtime/actor_calls.py): a
synchronous client's thread writes a call itself when the link to the
actor's worker is idle, and the worker's actor thread writes the reply; calls
keep their order either way, and the actor thread stops with its worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from trioclust import Client, LocalCluster


class Counter:
    n = 0

    def __init__(self) -> None:
        self.n = 0

    def increment(self) -> int:
        self.n += 1
        return self.n

    def where(self) -> str:
        return threading.current_thread().name

    async def async_increment(self) -> int:
        self.n += 1
        return self.n


@pytest.fixture
def client() -> Iterator[Client]:
    # tcp: a link writes from a thread on TCP (inproc:// always goes through the loop)
    with LocalCluster(
        n_workers=1, processes=False, threads_per_worker=1, protocol="tcp", dashboard_address=None
    ) as cluster:
        with Client(cluster) as c:
            yield c


def test_sequential_calls_are_written_by_the_callers_thread(client: Client, monkeypatch: Any) -> None:
    counter = client.submit(Counter, actor=True).result()
    assert counter.increment().result() == 1  # opens the link to the worker
    queued: list[object] = []
    inbox = client._core.inbox
    real = inbox.call_soon
    monkeypatch.setattr(inbox, "call_soon", lambda fn: (queued.append(fn), real(fn)))
    for i in range(2, 52):
        assert counter.increment().result() == i
    # none went through the client's event loop: each was written on this thread
    assert queued == []


def test_calls_keep_their_order_whichever_path_they_take(client: Client) -> None:
    counter = client.submit(Counter, actor=True).result()
    futures = []
    for i in range(300):
        # a burst: some are written here, some queue behind others for the loop
        futures.append(counter.increment())
        if i % 50 == 0:
            futures[-1].result()
    assert [f.result() for f in futures] == list(range(1, 301))
    assert counter.where().result().startswith("trioclust-actors-")
    # coroutine methods run on the worker's loop, concurrently with later calls
    mixed = [counter.async_increment() if i % 2 else counter.increment() for i in range(20)]
    assert sorted(f.result() for f in mixed) == list(range(301, 321))
    assert counter.n == 320
