"""Plugins (Dask's docs/source/plugins.rst and the Client.register_plugin
docstring) and client.restart (the Client.restart docstring), under the
synchronous client and the asynchronous one under trio and asyncio."""

from __future__ import annotations

import operator
from typing import Any

import pytest

from trioclust import (
    CancelledError,
    Client,
    Nanny,
    NannyPlugin,
    Scheduler,
    SchedulerPlugin,
    Worker,
    WorkerPlugin,
)
from trioclust.testing.cluster import cluster


def inc(x: int) -> int:
    return x + 1


class Recorder(SchedulerPlugin):
    """plugins.rst, "Accessing Full Task State": transitions, with the scheduler's task."""

    name = "recorder"

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.events.append(("start",))

    def transition(self, key: str, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        ts = self.scheduler.state.tasks.get(key)  # the full task state is there
        self.events.append(("transition", key, start, finish, ts is not None, "stimulus_id" in kwargs))

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self.events.append(("add_worker", worker))

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        self.events.append(("remove_worker", worker))

    def update_graph(self, scheduler: Any, *, client: str, keys: set[str], tasks: list[str], **kwargs: Any) -> None:
        self.events.append(("update_graph", sorted(keys)))

    def add_client(self, scheduler: Any, client: str) -> None:
        self.events.append(("add_client",))

    def remove_client(self, scheduler: Any, client: str) -> None:
        self.events.append(("remove_client",))

    def restart(self, scheduler: Any) -> None:
        self.events.append(("restart",))

    async def close(self) -> None:
        self.events.append(("close",))


class WorkerRecorder(WorkerPlugin):
    def __init__(self) -> None:
        self.worker: Any = None
        self.transitions: list[tuple[str, str, str]] = []
        self.torn_down = False

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def teardown(self, worker: Any) -> None:
        self.torn_down = True

    def transition(self, key: str, start: str, finish: str, **kwargs: Any) -> None:
        self.transitions.append((key, start, finish))


@pytest.mark.anyio
async def test_scheduler_plugin_hooks(servers: tuple[Scheduler, Worker, Worker]) -> None:
    s, _, _ = servers
    async with Client(s.address, asynchronous=True) as client:
        await client.register_plugin(Recorder())
        plugin = s.plugins["recorder"]
        assert plugin.events == [("start",)]
        x = client.submit(inc, 1, key="x")
        assert await x == 2
        assert ("update_graph", ["x"]) in plugin.events
        async with Worker(s.address) as late:
            pass
        # the result may reach the client before the pass that records it in
        # memory (told early): the late worker's registration came after it
        moves = [(e[2], e[3]) for e in plugin.events if e[0] == "transition" and e[1] == "x"]
        assert moves[0] == ("released", "waiting")
        assert moves[-1] == ("processing", "memory")
        assert all(e[5] for e in plugin.events if e[0] == "transition")
        assert ("add_worker", late.address) in plugin.events
        assert ("remove_worker", late.address) in plugin.events
        # register_scheduler_plugin, idempotent: the first stays
        await client.register_scheduler_plugin(Recorder(), idempotent=True)
        assert s.plugins["recorder"] is plugin
        async with Client(s.address, asynchronous=True):
            assert ("add_client",) in plugin.events


@pytest.mark.anyio
async def test_worker_plugin_hooks(servers: tuple[Scheduler, Worker, Worker]) -> None:
    s, a, b = servers
    async with Client(s.address, asynchronous=True) as client:
        replies = await client.register_plugin(WorkerRecorder(), name="rec")
        assert replies == {a.address: "OK", b.address: "OK"}
        assert a.plugins["rec"].worker is a
        assert b.plugins["rec"].worker is b
        x = client.submit(inc, 1, key="x")
        await x
        holder = a if "x" in a.data else b
        seen = holder.plugins["rec"].transitions
        assert ("x", "executing", "memory") in seen
        async with Worker(s.address) as late:
            assert isinstance(late.plugins["rec"], WorkerRecorder)
            recorder = late.plugins["rec"]
        assert recorder.torn_down
        # workers without a nanny: no nanny to set a NannyPlugin up in
        assert await client.register_plugin(NannyPlugin()) == {}


class Broken(WorkerPlugin):
    def setup(self, worker: Any) -> None:
        raise ValueError("no setup for you")


@pytest.mark.anyio
async def test_a_failing_worker_plugin_setup_is_reported(servers: tuple[Scheduler, Worker, Worker]) -> None:
    s, a, b = servers
    async with Client(s.address, asynchronous=True) as client:
        replies = await client.register_worker_plugin(Broken(), name="broken")
        assert sorted(replies) == sorted([a.address, b.address])
        assert all("no setup for you" in text for text in replies.values())
        assert await client.submit(inc, 1) == 2  # the workers keep serving


@pytest.mark.anyio
async def test_restart_without_nannies_closes_the_workers(servers: tuple[Scheduler, Worker, Worker]) -> None:
    """Client.restart docstring: workers without nannies are shut down."""
    s, a, b = servers
    async with Client(s.address, asynchronous=True) as client:
        x = client.submit(inc, 1)
        await x
        await client.restart(wait_for_workers=False)
        assert x.cancelled()
        with pytest.raises(CancelledError):
            await x
        await a.wait_closed()
        await b.wait_closed()
        assert a.close_reason == "restarted by client.restart()"
        assert s.state.tasks == {}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_restart_with_nannies(anyio_backend: str) -> None:
    """Client.restart: every worker restarted through its nanny, futures
    cancelled, the cluster usable after."""
    async with Scheduler() as s, Nanny(s.address) as n1, Nanny(s.address) as n2:
        async with Client(s.address, asynchronous=True) as client:
            await client.wait_for_workers(2)
            x = client.submit(operator.add, 1, 1)
            assert await x == 2
            before = (n1.worker_pid, n2.worker_pid)
            await client.restart()
            assert x.cancelled()
            assert len(s.state.workers) == 2
            await n1.wait_for_worker(pid_not=before[0])
            await n2.wait_for_worker(pid_not=before[1])
            assert await client.submit(operator.add, 2, 1) == 3


def test_plugins_and_restart_sync() -> None:
    """The same names under the synchronous client."""
    with cluster(n_workers=2) as (address, _), Client(address) as client:
        replies = client.register_worker_plugin(WorkerRecorder(), name="rec")
        assert sorted(replies.values()) == ["OK", "OK"]
        assert client.register_plugin(Recorder()) is None

        def events(dask_scheduler: Any) -> list[Any]:
            return list(dask_scheduler.plugins["recorder"].events)

        assert client.submit(inc, 1).result() == 2
        assert any(e[0] == "update_graph" for e in client.run_on_scheduler(events))
