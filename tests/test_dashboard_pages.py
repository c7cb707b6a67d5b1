"""The dashboard's pages in headless Chromium during a running 5,000-task
computation (screenshots under the test's temporary folder), the graph
view's aggregation, and the per-worker info page."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.test_dashboard import CHROMIUM, _chromium, dashboard_cluster, http_get
from trioclust import Client
from trioclust.dashboard.graph import graph

GATE = threading.Event()


def inc(x: int) -> int:
    return x + 1


def gated(x: int) -> int:
    GATE.wait(60)  # the test opens the gate; bounded so no thread can hang on
    return x


def add(a: int, b: int) -> int:
    return a + b


@pytest.mark.trio
async def test_graph_is_per_task_when_small_and_per_prefix_when_large() -> None:
    async with dashboard_cluster() as (s, link, _), Client(s.address, asynchronous=True) as client:
        xs = client.map(inc, range(4))
        total = client.submit(sum, xs)
        assert await total == 10
        small = graph(s)
        assert small["mode"] == "tasks"
        assert {n["id"]: n["depth"] for n in small["nodes"]}[total.key] == 1
        assert sorted(e[1] for e in small["edges"]) == [total.key] * 4
        assert {n["state"] for n in small["nodes"]} == {"memory"}
        pairs = client.map(add, xs, xs[::-1])
        await client.gather(pairs)
        big = graph(s, limit=5)
        assert big["mode"] == "prefixes"
        nodes = {n["id"]: n for n in big["nodes"]}
        assert (nodes["inc"]["count"], nodes["inc"]["memory"], nodes["inc"]["depth"]) == (4, 4, 0)
        assert nodes["add"]["depth"] == 1
        assert sorted(big["edges"]) == [["inc", "add", 8], ["inc", "sum", 4]]
        served = (await http_get(link + "/json/graph")).json()
        assert served["mode"] == "tasks"
        assert served["ntasks"] == 9


@pytest.mark.trio
async def test_worker_info_page_shows_numbers_and_logs() -> None:
    async with dashboard_cluster() as (s, link, workers), Client(s.address, asynchronous=True):
        alpha = workers[0]
        page = await http_get(f"{link}/info/worker/{quote(alpha.address, safe='')}")
        assert page.status == 200
        text = page.text()
        assert "<h2>Worker alpha</h2>" in text
        assert "registered with" in text  # its own log line
        assert (await http_get(f"{link}/info/worker/tcp%3A%2F%2Fnowhere%3A1")).status == 404


@pytest.mark.trio
@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package (/usr/bin/chromium)")
async def test_pages_in_chromium_during_a_5000_task_computation(tmp_path: Path) -> None:
    async with (
        dashboard_cluster() as (s, link, workers),
        Client(s.address, asynchronous=True) as client,
    ):
        warm = client.map(inc, range(300))
        await client.gather(warm)  # a task stream to draw
        GATE.clear()
        try:
            running = client.map(gated, range(5000))
            await client.scheduler_info()  # after the graph, on the same link: all 5,000 known
            assert len(s.state.tasks) >= 5300
            shots = {name: tmp_path / f"{name}.png" for name in ("status", "graph", "worker")}
            status = await _chromium(
                "--virtual-time-budget=3000", "--dump-dom", f"--screenshot={shots['status']}",
                link + "/status", workdir=tmp_path,
            )
            assert '<div class="name" title="gated">gated</div>' in status
            assert '<div class="state" data-state="processing">' in status
            assert 'class="fill-managed"' in status
            assert f'href="info/worker/{quote(workers[0].address, safe="")}"' in status
            page = await _chromium(
                "--virtual-time-budget=3000", "--dump-dom", f"--screenshot={shots['graph']}",
                link + "/graph", workdir=tmp_path,
            )
            assert 'data-mode="prefixes"' in page
            assert 'data-prefix="gated"' in page
            assert 'data-prefix="inc"' in page
            worker = await _chromium(
                "--dump-dom", f"--screenshot={shots['worker']}",
                f"{link}/info/worker/{quote(workers[0].address, safe='')}", workdir=tmp_path,
            )
            assert "registered with" in worker
            for shot in shots.values():
                assert shot.read_bytes().startswith(b"\x89PNG")
        finally:
            GATE.set()
        assert await client.gather(running) == list(range(5000))
