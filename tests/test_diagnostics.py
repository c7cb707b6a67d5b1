"""client.get_task_stream(), get_scheduler_logs(), get_worker_logs(), under trio and asyncio,
and with the synchronous client.

The task stream's examples follow the docstring of Dask's
``Client.get_task_stream`` (distributed/client.py) and docs/source/api.rst.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from trioclust import Client, LocalCluster, Scheduler, Worker
from trioclust.client.diagnostics import parse_since

DASK_FIELDS = {"key", "worker", "thread", "startstops", "status", "nbytes"}


def inc(x: int) -> int:
    return x + 1


def fail(x: int) -> int:
    raise ValueError(x)


def test_parse_since() -> None:
    assert parse_since(None) is None
    assert parse_since(12.5) == 12.5
    assert parse_since("60s", now=100.0) == 40.0
    assert parse_since("500 ms", now=100.0) == 99.5
    assert parse_since("2m", now=1000.0) == 880.0
    with pytest.raises(ValueError, match="such as '10s'"):
        parse_since("yesterday")


@pytest.fixture
async def c() -> AsyncIterator[tuple[Client, Scheduler, list[Worker]]]:
    async with Scheduler() as s, Worker(s.address, nthreads=2) as a, Worker(s.address) as b:
        async with Client(s.address, asynchronous=True) as client:
            yield client, s, [a, b]


@pytest.mark.anyio
async def test_task_stream_records_what_ran_in_the_block(c: tuple[Client, Scheduler, list[Worker]]) -> None:
    client, _, workers = c
    assert await client.gather(client.map(inc, range(5))) == [1, 2, 3, 4, 5]  # before: not recorded
    async with client.get_task_stream() as ts:
        futures = client.map(inc, range(10, 20))
        assert await client.gather(futures) == list(range(11, 21))
        with pytest.raises(ValueError):
            await client.submit(fail, 1)
    data = ts.data
    assert len(data) == 11
    assert {f.key for f in futures} <= {d["key"] for d in data}
    for record in data:
        assert DASK_FIELDS <= set(record)
        assert record["worker"] in {w.address for w in workers}
        (compute,) = [ss for ss in record["startstops"] if ss["action"] == "compute"]
        assert compute["start"] <= compute["stop"]
        assert record["thread"] != 0
    assert sorted(d["status"] for d in data).count("erred") == 1
    assert all(d["nbytes"] > 0 for d in data if d["status"] == "memory")


@pytest.mark.anyio
async def test_task_stream_query_by_count_and_time(c: tuple[Client, Scheduler, list[Worker]]) -> None:
    client, _, _ = c
    before = time.time()
    assert len(await client.gather(client.map(inc, range(8)))) == 8
    newest = await client.get_task_stream(count=3)
    assert len(newest) == 3
    everything = await client.get_task_stream(start=before - 1)
    assert len(everything) == 8
    assert newest == everything[-3:]
    assert await client.get_task_stream(start="60s", stop=before - 1) == []


@pytest.mark.anyio
async def test_scheduler_and_worker_logs(c: tuple[Client, Scheduler, list[Worker]]) -> None:
    client, _, workers = c
    logging.getLogger("trioclust.scheduler").warning("a line from the scheduler's loop")
    lines = await client.get_scheduler_logs()
    assert any(level == "INFO" and "Register worker" in line for level, line in lines)
    assert await client.get_scheduler_logs(n=1) == lines[-1:]

    def say(dask_worker: Worker) -> None:
        logging.getLogger("trioclust.worker").warning("hello from %s", dask_worker.name)

    await client.run(say)
    logs = await client.get_worker_logs()
    assert set(logs) == {w.address for w in workers}
    for w in workers:
        assert ("WARNING", logs[w.address][-1][1]) == logs[w.address][-1]
        assert f"hello from {w.name}" in logs[w.address][-1][1]
    only = await client.get_worker_logs(n=1, workers=[workers[0].address])
    assert list(only) == [workers[0].address]
    assert len(only[workers[0].address]) == 1


def test_sync_client_task_stream_and_logs() -> None:
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        with client.get_task_stream() as ts:
            assert client.gather(client.map(inc, range(4))) == [1, 2, 3, 4]
        assert len(ts.data) == 4
        assert {r["status"] for r in ts.data} == {"memory"}
        query = client.get_task_stream(count=2)
        assert len(query) == 2
        assert [r["key"] for r in query] == [r["key"] for r in ts.data[-2:]]
        assert isinstance(client.get_scheduler_logs(), list)
        assert list(client.get_worker_logs()) == list(client.scheduler_info()["workers"])


PROFILE_GATE = threading.Event()


def busy_in_a_named_function(n: int) -> int:
    total = 0
    while not PROFILE_GATE.is_set():  # spins until the test has its samples
        total += 1
    return n


@pytest.mark.anyio
async def test_profile_counts_the_lines_running_tasks_spend_time_on(
    c: tuple[Client, Scheduler, list[Worker]],
) -> None:
    client, _, workers = c
    assert (await client.profile(duration=0.05))["count"] == 0  # nothing running: no samples
    PROFILE_GATE.clear()
    try:
        futures = client.map(busy_in_a_named_function, range(2))
        while sum(w.state.executing.__len__() for w in workers) < 2:  # noqa: ASYNC110
            await anyio.sleep(0.005)
        tree = await client.profile(duration=0.2, interval=0.005)
        per_worker = await client.profile(duration=0.05, interval=0.005, merge_workers=False)
    finally:
        PROFILE_GATE.set()
    assert await client.gather(futures) == [0, 1]
    assert tree["count"] > 0
    (top,) = tree["children"].values()  # the user's function is the outermost frame
    assert top["description"]["name"] == "busy_in_a_named_function"
    assert top["count"] == tree["count"]
    assert set(per_worker) == {w.address for w in workers}


def test_profile_trees_merge_by_adding_counts() -> None:
    from trioclust.runtime import profiling

    def leaf() -> Any:
        return sys._getframe()

    a = profiling.create()
    for _ in range(2):  # the same stack twice
        profiling.process(leaf(), a)
    merged = profiling.merge(a, a)
    assert merged["count"] == 4
    path = merged
    while path["children"]:
        (path,) = path["children"].values()
    assert path["description"]["name"] == "leaf"
    assert path["count"] == 4
