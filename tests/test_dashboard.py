"""The dashboard: /status in a real browser, /health, /metrics, /json/..., port fallback."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import pytest
import trio

from trioclust import Client, Scheduler, Worker, config
from trioclust.core import events as ev
from trioclust.core import instructions as ins
from trioclust.dashboard import TaskStream, key_prefix, parse_dashboard_address, serve_dashboard
from trioclust.dashboard.snapshot import Throttled

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def inc(x: int) -> int:
    return x + 1


def fail(x: int) -> int:
    raise ValueError(f"bad input {x}")


# ------------------------------------------------------------------ helpers
@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


async def http_get(url: str) -> Response:
    """GET ``url`` over a fresh connection (h11 over a trio socket)."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = h11.Connection(h11.CLIENT)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            request = h11.Request(
                method="GET", target=target or "/",
                headers=[("Host", parts.netloc), ("Connection", "close")],
            )
            await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            status, headers, body = 0, {}, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some())
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return Response(status, headers, bytes(body))


def _task_stream(s: Scheduler) -> TaskStream:
    """The scheduler's task stream; fed here from ``state.handle`` until the
    Scheduler records one itself (``self.task_stream.observe(events, instructions)``)."""
    own = getattr(s, "task_stream", None)
    if isinstance(own, TaskStream):
        return own
    stream = TaskStream()
    handle = s.state.handle

    def observed(*events: Any) -> Any:
        instructions = handle(*events)
        stream.observe(events, instructions)
        return instructions

    s.state.handle = observed  # type: ignore[method-assign]
    return stream


@asynccontextmanager
async def dashboard_cluster(
    address: str = "127.0.0.1:0",
) -> AsyncIterator[tuple[Scheduler, str, list[Worker]]]:
    """A Scheduler with its dashboard and two named workers; yields the dashboard's link."""
    async with Scheduler() as s:
        stream = _task_stream(s)
        async with trio.open_nursery() as nursery:
            link = await nursery.start(partial(serve_dashboard, s, address, task_stream=stream))
            async with (
                Worker(s.address, name="alpha", nthreads=2, memory_limit=2 * 2**30) as w1,
                Worker(s.address, name="beta", memory_limit=2**30) as w2,
            ):
                yield s, link, [w1, w2]
            nursery.cancel_scope.cancel()


async def _run_some_tasks(client: Client) -> list[Any]:
    """Six tasks that succeed, one that fails; returns the futures, all held."""
    futures = client.map(inc, range(6))
    assert await client.gather(futures) == list(range(1, 7))
    bad = client.submit(fail, 1)
    with pytest.raises(ValueError, match="bad input 1"):
        await bad
    return [*futures, bad]


# ------------------------------------------------------------------- routes
@pytest.mark.trio
async def test_health_and_redirect() -> None:
    async with dashboard_cluster() as (_s, link, _workers):
        health = await http_get(link + "/health")
        assert (health.status, health.text()) == (200, "ok")
        root = await http_get(link + "/")
        assert root.status in (302, 307)
        assert root.headers["location"].endswith("status")
        page = await http_get(link + "/status")
        assert page.status == 200
        assert "text/html" in page.headers["content-type"]
        assert b"static/status.js" in page.body
        script = await http_get(link + "/static/status.js")
        assert script.status == 200
        assert b"json/status" in script.body
        assert (await http_get(link + "/static/nope.js")).status == 404
        missing = await http_get(link + "/json/nope")
        assert missing.status == 404
        assert "status" in missing.json()["error"]


_SAMPLE = re.compile(
    r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*\})? -?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?'
)


def _parse_metrics(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+", line), line
            continue
        assert _SAMPLE.fullmatch(line), f"not a Prometheus sample: {line!r}"
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


@pytest.mark.trio
async def test_metrics_in_prometheus_format() -> None:
    async with (
        dashboard_cluster() as (s, link, workers),
        Client(s.address, asynchronous=True) as client,
    ):
        held = await _run_some_tasks(client)  # held: their results stay in memory
        response = await http_get(link + "/metrics")
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = _parse_metrics(response.text())
        assert samples["trioclust_workers"] == 2
        assert samples["trioclust_threads"] == 3
        assert samples['trioclust_tasks_completed_total'] == 6
        assert samples['trioclust_task_runs_total{status="erred"}'] == 1
        assert samples["trioclust_bytes_stored"] > 0
        assert samples[f'trioclust_worker_memory_limit_bytes{{worker="{workers[1].address}"}}'] == 2**30
        assert samples[f'trioclust_worker_memory_bytes{{worker="{workers[0].address}"}}'] > 0
        # memory by kind, with Dask's worker metric's name: nothing spilled here
        assert samples['dask_worker_memory_bytes{type="managed"}'] == samples["trioclust_bytes_stored"]
        assert samples['dask_worker_memory_bytes{type="unmanaged"}'] > 0
        assert samples['dask_worker_memory_bytes{type="spilled"}'] == 0
        # tasks by state: every state listed; the held results are in memory
        states = {k: v for k, v in samples.items() if k.startswith("trioclust_tasks{")}
        assert len(states) == 7
        assert states['trioclust_tasks{state="memory"}'] == 6
        assert states['trioclust_tasks{state="erred"}'] == 1 == len(held) - 6
        # Dask's names for the same quantities (distributed/http/scheduler/prometheus/core.py)
        assert samples["dask_scheduler_clients"] == 1
        assert samples["dask_scheduler_workers_added_total"] == 2
        assert samples['dask_scheduler_workers{state="idle"}'] == 2
        assert samples['dask_scheduler_tasks{state="memory"}'] == 6
        assert samples['dask_scheduler_prefix_state_totals_total{task_prefix_name="inc",state="memory"}'] == 6
        assert samples['dask_scheduler_prefix_state_totals_total{task_prefix_name="fail",state="erred"}'] == 1
        assert samples['dask_scheduler_tasks_compute_seconds_total{task_prefix_name="inc"}'] > 0
        assert samples['dask_scheduler_tasks_output_bytes{task_prefix_name="inc"}'] > 0
        # counters keep counting after the first scrape, past the kept record too
        more = client.map(inc, range(100, 103))
        await client.gather(more)
        samples = _parse_metrics((await http_get(link + "/metrics")).text())
        assert samples['dask_scheduler_prefix_state_totals_total{task_prefix_name="inc",state="memory"}'] == 9


@pytest.mark.trio
async def test_json_status_shows_workers_tasks_and_stream() -> None:
    async with (
        dashboard_cluster() as (s, link, workers),
        Client(s.address, asynchronous=True) as client,
    ):
        held = await _run_some_tasks(client)  # held: their results stay in memory
        doc = (await http_get(link + "/json/status")).json()
        by_name = {w["name"]: w for w in doc["workers"]}
        assert set(by_name) == {"alpha", "beta"}
        assert by_name["alpha"]["address"] == workers[0].address
        assert by_name["alpha"]["nthreads"] == 2
        assert by_name["alpha"]["memory_limit"] == 2 * 2**30
        assert all(w["memory"] > 0 for w in doc["workers"])
        assert sum(w["stored"] for w in doc["workers"]) == 6
        assert doc["totals"]["workers"] == 2
        assert doc["totals"]["nthreads"] == 3
        assert doc["tasks"]["memory"] == 6
        assert doc["scheduler"]["address"] == s.address
        progress = {p["prefix"]: p for p in doc["progress"]}
        assert progress["inc"]["total"] == progress["inc"]["memory"] == 6
        stream = doc["task_stream"]
        runs = stream["finished"]
        assert sorted(r["status"] for r in runs) == ["erred"] + ["memory"] * 6
        assert {r["worker"] for r in runs} <= {w.address for w in workers}
        assert all(r["stop"] >= r["start"] > 0 for r in runs)
        assert stream["totals"]["memory"] == 6
        assert stream["running"] == []
        # the page asks only for what is new
        newer = (await http_get(link + f"/json/status?since={stream['last_id']}")).json()
        assert newer["task_stream"]["finished"] == []
        # what the page asks: the runs merged into spans, and the newest in full
        merged = (await http_get(link + "/json/status?since=0&resolution=1")).json()["task_stream"]
        assert sum(span["count"] for span in merged["spans"]) == 7
        assert [r["id"] for r in merged["recent"]] == [r["id"] for r in runs]
        for bad in ("-1", "nan", "x", ""):  # not a resolution: the runs, one by one
            assert "finished" in (await http_get(link + f"/json/status?resolution={bad}")).json()["task_stream"]
        two = (await http_get(link + "/json/task-stream?n=2")).json()
        assert [r["id"] for r in two["finished"]] == [r["id"] for r in runs[-2:]]
        assert (await http_get(link + "/json/identity")).json()["address"] == s.address
        assert (await http_get(link + "/json/tasks")).json()["memory"] == 6
        assert [p["prefix"] for p in (await http_get(link + "/json/progress?n=1")).json()] == ["fail"]
        index = (await http_get(link + "/json")).json()
        assert "/json/status" in index
        assert all(f.key in s.state.tasks for f in held)


# ------------------------------------------------------------- port choice
@pytest.mark.trio
async def test_taken_port_falls_back_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trioclust.dashboard")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with contextlib.AsyncExitStack() as stack:
            with pytest.warns(UserWarning, match=f"Port {port} is already in use"):
                _s, link, _workers = await stack.enter_async_context(
                    dashboard_cluster(f"127.0.0.1:{port}")
                )
            served = urlsplit(link).port
            assert served is not None
            assert served != port
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert warnings == [
                f"Port {port} is in use; the dashboard serves on {link}/status instead"
            ]
            assert (await http_get(link + "/health")).text() == "ok"


@pytest.mark.anyio
async def test_taken_port_gives_dasks_user_warning() -> None:
    # under asyncio the scheduler runs on a trio thread: the warning reaches
    # the caller all the same (warnings are process-wide)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with contextlib.AsyncExitStack() as stack:
            with pytest.warns(UserWarning, match="already in use") as record:
                scheduler = await stack.enter_async_context(
                    Scheduler(dashboard_address=f"127.0.0.1:{port}")
                )
            link = scheduler.dashboard_link
        assert link is not None
        served = urlsplit(link).port
        assert served is not None
        assert served != port
        assert link == f"http://127.0.0.1:{served}/status"
        assert [str(w.message) for w in record] == [
            f"Port {port} is already in use.\n"
            "Perhaps you already have a cluster running?\n"
            f"Hosting the HTTP server on port {served} instead"
        ]


@pytest.mark.trio
async def test_address_from_config_on_the_schedulers_host() -> None:
    with config.set(**{"scheduler.dashboard-address": ":0"}):
        async with Scheduler() as s, trio.open_nursery() as nursery:
            link = await nursery.start(serve_dashboard, s)
            assert link.startswith("http://127.0.0.1:")
            assert (await http_get(link + "/health")).text() == "ok"
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_unlistenable_address_is_a_clear_error() -> None:
    async with Scheduler() as s:
        with pytest.raises(OSError, match=r"The dashboard cannot listen on 192\.0\.2\.1:0"):
            await serve_dashboard(s, "192.0.2.1:0")  # TEST-NET-1: not an address of this host


def test_parse_dashboard_address() -> None:
    assert parse_dashboard_address(":8787") == ("127.0.0.1", 8787)
    assert parse_dashboard_address(":8787", "10.1.2.3") == ("10.1.2.3", 8787)
    assert parse_dashboard_address("8787", "::1") == ("::1", 8787)
    assert parse_dashboard_address("0.0.0.0:0") == ("0.0.0.0", 0)
    assert parse_dashboard_address("[::1]:9000") == ("::1", 9000)
    assert parse_dashboard_address("http://localhost:9000/") == ("localhost", 9000)
    with pytest.raises(ValueError, match="Invalid dashboard address 'host:port'"):
        parse_dashboard_address("host:port")


# -------------------------------------------------------------- task stream
def test_task_stream_follows_runs() -> None:
    clock = iter(range(100))
    stream = TaskStream(maxlen=4, clock=lambda: float(next(clock)))

    def compute(worker: str, *keys: str) -> None:
        stream.observe([], [ins.ComputeTask(worker=worker, key=k, run_spec=None) for k in keys])

    stream.observe([ev.AddWorker(address="A", nthreads=1, stimulus_id="add-worker")], [])  # t=0
    compute("A", "inc-aa11bb22cc33", "inc-dd44ee55ff66")  # t=1: two tasks, one thread
    assert stream.running() == [("inc-aa11bb22cc33", "A", 1.0, 1.0), ("inc-dd44ee55ff66", "A", 1.0, None)]
    stream.observe([ev.TaskFinished(worker="B", key="inc-aa11bb22cc33", stimulus_id="task-finished")], [])  # t=2: stale
    stream.observe([ev.TaskFinished(worker="A", key="inc-aa11bb22cc33", stimulus_id="task-finished")], [])  # t=3
    stream.observe([ev.TaskFinished(worker="A", key="inc-dd44ee55ff66", stimulus_id="task-finished")], [])  # t=4
    # the second waited in the worker's queue until the first was done
    assert [(r.prefix, r.sent, r.start, r.stop, r.status) for r in stream.recent()] == [
        ("inc", 1.0, 1.0, 3.0, "memory"), ("inc", 1.0, 3.0, 4.0, "memory"),
    ]
    compute("A", "x-1")  # t=5
    compute("B", "y-2", "z-3")  # t=6, on a worker whose threads it never saw
    assert stream.running()[1:] == [("y-2", "B", 6.0, 6.0), ("z-3", "B", 6.0, 6.0)]
    stream.observe([ev.RemoveWorker(address="B", stimulus_id="remove-worker")], [ins.FreeKeys(worker="A", keys=("x-1",))])
    assert [(r.key, r.status) for r in stream.recent()] == [
        ("inc-dd44ee55ff66", "memory"), ("y-2", "lost"), ("z-3", "lost"), ("x-1", "cancelled"),
    ]  # the oldest fell off: maxlen 4
    assert stream.totals == {"memory": 2, "erred": 0, "cancelled": 1, "lost": 2, "rescheduled": 0}
    assert stream.completed == 2
    assert stream.last_id == 5
    assert [r.id for r in stream.recent(since=3)] == [4, 5]
    assert [r.id for r in stream.recent(1)] == [5]
    # an error ends the run before the FreeKeys that drops the error record
    compute("A", "f-1")
    stream.observe(
        [ev.TaskErred(worker="A", key="f-1", exception=None, stimulus_id="task-erred")],
        [ins.FreeKeys(worker="A", keys=("f-1",))],
    )
    assert stream.recent(1)[0].status == "erred"
    assert stream.totals["cancelled"] == 1
    assert stream.running() == []


def test_throttled_reuses_a_value_for_ten_times_its_cost() -> None:
    now = [0.0]
    calls: list[float] = []

    def compute() -> int:
        calls.append(now[0])
        now[0] += 0.1  # computing takes 0.1 s
        return len(calls)

    cached = Throttled(compute, min_interval=0.25, clock=lambda: now[0])
    assert cached() == 1  # fresh until 0.1 + 10 * 0.1
    now[0] = 1.0
    assert cached() == 1
    now[0] = 1.1
    assert cached() == 2
    assert calls == [0.0, 1.1]


def test_key_prefix() -> None:
    assert key_prefix("inc-3f2a9c0d1e2f3a4b5c6d7e8f9a0b1c2d") == "inc"
    assert key_prefix("load-csv-12") == "load-csv"
    assert key_prefix("lambda") == "lambda"
    assert key_prefix("deadbeefcafe") == "deadbeefcafe"


# ------------------------------------------------------------------ browser
async def _chromium(*args: str, workdir: Path, timeout: float = 60) -> str:
    """Run headless Chromium to completion and return its stdout.

    It runs in a session of its own, and the whole process group is killed
    afterwards, so no helper it started (zygote, renderer) outlives the call.
    """
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-breakpad", "--disable-crash-reporter",
        "--disable-dev-shm-usage", f"--user-data-dir={workdir / 'profile'}",
        "--window-size=1280,900", *args,
    ]
    out, err = workdir / "stdout", workdir / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = await trio.lowlevel.open_process(
            command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            start_new_session=True,
        )
        try:
            with trio.fail_after(timeout):
                code = await proc.wait()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await proc.wait()
    assert code == 0, f"chromium exited with {code}: {err.read_text()[-2000:]}"
    return out.read_text()


@pytest.mark.trio
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium package (/usr/bin/chromium)"
)
async def test_status_page_in_headless_chromium(tmp_path: Path) -> None:
    async with (
        dashboard_cluster() as (s, link, workers),
        Client(s.address, asynchronous=True) as client,
    ):
        held = await _run_some_tasks(client)  # held: their results stay in memory
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard-status.png"
        shot.unlink(missing_ok=True)
        # virtual time: the page's polls and redraws run for 3 s, then the
        # DOM (as the script left it) is printed and the screenshot taken
        dom = await _chromium(
            "--virtual-time-budget=3000", "--dump-dom", f"--screenshot={shot}",
            link + "/status", workdir=tmp_path,
        )
        for worker in workers:  # the script drew the workers, by name and address
            assert f'data-worker="{worker.address}"' in dom
        assert '<div class="wname">alpha</div>' in dom
        assert '<div class="wname">beta</div>' in dom
        assert 'class="conn up"' in dom
        assert '<div class="state" data-state="erred">' in dom
        # the table of recent runs, from the runs the page got in full
        assert '<td class="status-erred">erred</td>' in dom
        assert dom.count('<td class="status-memory">memory</td>') == 6
        assert shot.read_bytes().startswith(b"\x89PNG")
        assert all(f.key in s.state.tasks for f in held)
