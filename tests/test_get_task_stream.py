"""Dask's module-level ``get_task_stream`` and ``performance_report`` on the
current client (no ``client=``), under trio and asyncio and synchronously.

The examples are those of Dask's docs/source/diagnosing-performance.rst
("Task start and stop times")::

    from dask.distributed import get_task_stream

    with get_task_stream() as ts:
        x.sum().compute()

    with get_task_stream(plot='save', filename="task-stream.html") as ts:
        x.persist()
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trioclust import Client, LocalCluster, Scheduler, Worker, get_task_stream, performance_report

DASK_FIELDS = {"key", "worker", "thread", "startstops", "status", "nbytes"}


def inc(x: int) -> int:
    return x + 1


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with Scheduler() as s, Worker(s.address, nthreads=2), Client(s.address, asynchronous=True) as c:
        yield c


@pytest.mark.anyio
async def test_get_task_stream_records_on_the_current_client(client: Client, tmp_path: Path) -> None:
    await client.gather(client.map(inc, range(3)))  # before the block: not recorded
    async with get_task_stream() as ts:
        assert await client.gather(client.map(inc, range(10, 15))) == [11, 12, 13, 14, 15]
    assert ts.client is client
    assert len(ts.data) == 5
    assert all(DASK_FIELDS <= set(run) for run in ts.data)
    assert ts.figure is None  # plot=False draws nothing

    page = tmp_path / "task-stream.html"
    async with get_task_stream(plot="save", filename=page) as saved:
        await client.gather(client.map(inc, range(20, 24)))
    assert len(saved.data) == 4
    assert saved.figure is not None
    assert page.read_text("utf-8") == saved.figure
    assert saved.figure.count("<rect") == 4
    assert not any(tag in saved.figure for tag in ("<script", "<link", "src=", "@import"))  # nothing to load


@pytest.mark.anyio
async def test_performance_report_uses_the_current_client(client: Client, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    async with performance_report(filename=report) as recorder:
        await client.gather(client.map(inc, range(6)))
    assert recorder.client is client
    assert "6 task runs" in report.read_text("utf-8")


def test_sync_module_level_task_stream_and_report(tmp_path: Path) -> None:
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        with get_task_stream(plot=True, filename=tmp_path / "unused.html") as ts:
            client.gather(client.map(inc, range(7)))
        assert ts.client is client
        assert len(ts.data) == 7
        assert ts.figure is not None
        assert ts.figure.count("<rect") == 7
        assert not (tmp_path / "unused.html").exists()  # plot=True draws, "save" writes
        with performance_report(filename=tmp_path / "r.html"):
            client.gather(client.map(inc, range(3)))
        assert "3 task runs" in (tmp_path / "r.html").read_text("utf-8")


def test_without_a_running_client_they_say_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No clients found"), get_task_stream():
        pass
    with pytest.raises(ValueError, match="No clients found"), performance_report(tmp_path / "r.html"):
        pass
