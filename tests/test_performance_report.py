"""performance_report(): one HTML file with every section, read by headless
Chromium with the network cut off.

The usage is Dask's docs/source/diagnosing-performance.rst::

    with performance_report(filename="dask-report.html"):
        ## some dask computation
"""

from __future__ import annotations

import operator
import re
from pathlib import Path

import pytest
import trio

from tests.test_dashboard import CHROMIUM, _chromium
from trioclust import Client, LocalCluster, Scheduler, Worker, performance_report

SECTIONS = {
    "summary": "Summary",
    "task-stream": "Task stream",
    "progress": "Progress by prefix",
    "workers": "Workers: CPU and memory over time",
    "slowest": "Slowest tasks",
    "transfers": "Transfers",
    "code": "Code",
}

# no name resolves and every connection goes to a closed port: nothing loads
OFFLINE = ("--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>")


def inc(x: int) -> int:
    return x + 1


def fail(x: int) -> int:
    raise ValueError(x)


@pytest.mark.trio
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package (/usr/bin/chromium)")
async def test_report_has_every_section_offline_in_chromium(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    async with Scheduler() as s, Worker(s.address, nthreads=2, heartbeat_interval=0.02) as a:
        async with Worker(s.address, heartbeat_interval=0.02) as b:
            async with Client(s.address, asynchronous=True) as client:
                x = await client.scatter(b"x" * 5000, workers=[a.address])
                y = await client.scatter(b"y" * 5000, workers=[b.address])
                async with performance_report(filename=report, client=client):
                    marker = "code-that-ran-marker"  # noqa: F841 - found in the report's code section
                    futures = client.map(inc, range(300))
                    assert sum(await client.gather(futures)) == sum(range(1, 301))
                    assert len(await client.submit(operator.add, x, y)) == 10_000
                    with pytest.raises(ValueError):
                        await client.submit(fail, 0)
                    # the CPU and memory charts need heartbeats of both workers
                    # (every 20 ms): their own timers, nothing else to wait on
                    with trio.fail_after(10):
                        while len({row[1] for row in s.worker_history}) < 2:  # noqa: ASYNC110
                            await trio.sleep(0.02)
    page = report.read_text()
    assert "<script" not in page
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", page)  # nothing to fetch
    shot = tmp_path / "report.png"
    dom = await _chromium(
        *OFFLINE, "--dump-dom", f"--screenshot={shot}", report.as_uri(), workdir=tmp_path
    )
    for sid, heading in SECTIONS.items():
        assert re.search(rf'<section id="{sid}"><h2>{re.escape(heading)}</h2>', dom), sid
    assert "302 task runs" in dom  # 300 inc, the add, the failure
    assert dom.count("<rect") >= 302
    assert re.search(r"<td>inc</td>.*?<td>300</td>", dom)
    assert "1 transfers" in dom
    assert 'class="chart"' in dom
    assert "<polyline" in dom
    assert "code-that-ran-marker" in dom
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_sync_report_in_a_local_cluster(tmp_path: Path) -> None:
    report = tmp_path / "dask-report.html"
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        with performance_report(filename=report, client=client):
            assert client.gather(client.map(inc, range(10))) == list(range(1, 11))
    page = report.read_text()
    assert "10 task runs" in page
    assert "test_sync_report_in_a_local_cluster" in page  # the code around the with block
    assert all(f'<section id="{sid}">' in page for sid in SECTIONS)
