"""The cluster as real processes: a scheduler process, two nannies and their worker processes.

The ``cluster`` fixture starts ``python -m trioclust.runtime.scheduler_process``
and two :class:`Nanny` objects in the test's trio loop, each supervising a
worker in a child process of its own. The synchronous ``Client`` blocks, so
everything it does runs off the trio loop, in ``trio.to_thread.run_sync``.

Task functions are module-level: cloudpickle sends them by reference, and the
workers import this module (the nannies put its folder on their PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE
from typing import Any

import psutil
import pytest
import trio

from trioclust import Client, KilledWorker, wait
from trioclust.runtime.nanny import Nanny
from trioclust.runtime.process_control import EXIT_FAILED, EXIT_OK

pytestmark = [pytest.mark.trio, pytest.mark.slow]

BOUND = 60  # seconds any single wait in these tests may take before it is a failure
DELAY = 0.03  # seconds a "slow" task takes: long enough for a graph to still run after a kill
SCHEDULER_MODULE = "trioclust.runtime.scheduler_process"
# where the workers find this module when they unpickle its functions: pytest imports it
# as `test_cluster_processes` (prepend mode) or `tests.test_cluster_processes` (importlib)
WORKER_PYTHONPATH = os.pathsep.join(
    [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
)
LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - [\w.]+ - (INFO|WARNING|ERROR) - ")


# ---------------------------------------------------------------------------- tasks


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def slow_inc(x: int) -> int:
    time.sleep(DELAY)
    return x + 1


def slow_add(a: int, b: int) -> int:
    time.sleep(DELAY)
    return a + b


def kill_own_worker() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def layered_graph(client: Client, fn: Any, leaves: list[Any], layers: int) -> list[list[Any]]:
    """``layers`` layers over ``leaves``: item i of a layer is fn(item i, item i+1) of the last."""
    graph = [leaves]
    for _ in range(layers):
        last = graph[-1]
        graph.append(
            [client.submit(fn, last[i], last[(i + 1) % len(last)]) for i in range(len(last))]
        )
    return graph


def expected_layers(leaves: list[int], layers: int) -> list[list[int]]:
    graph = [leaves]
    for _ in range(layers):
        last = graph[-1]
        graph.append([last[i] + last[(i + 1) % len(last)] for i in range(len(last))])
    return graph


# ------------------------------------------------------------------ the processes


async def read_json_line(stream: trio.abc.ReceiveStream) -> tuple[dict[str, Any], bytes]:
    """The first line of ``stream``, parsed, and whatever came after it."""
    buffer = b""
    while b"\n" not in buffer:
        chunk = await stream.receive_some()
        assert chunk, f"the process exited before writing a line; it wrote {buffer!r}"
        buffer += chunk
    line, rest = buffer.split(b"\n", 1)
    return json.loads(line), rest


async def open_scheduler_process(*args: str, stderr: int | None = None) -> trio.Process:
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", SCHEDULER_MODULE, *args], stdin=PIPE, stdout=PIPE, stderr=stderr
    )


async def finish(process: trio.Process) -> tuple[bytes, bytes]:
    """Read stdout and stderr (where piped) to their end, reap the process, close the pipes."""
    out, err = b"", b""
    try:
        with trio.fail_after(BOUND):
            if process.stdout is not None:
                while chunk := await process.stdout.receive_some():
                    out += chunk
            if process.stderr is not None:
                while chunk := await process.stderr.receive_some():
                    err += chunk
            await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()
    return out, err


async def ask_to_close(process: trio.Process) -> None:
    assert process.stdin is not None
    await process.stdin.send_all(b"close\n")
    await process.stdin.aclose()


@asynccontextmanager
async def scheduler_process() -> AsyncIterator[str]:
    """A scheduler process, its log on this process's stderr; yields its address."""
    process = await open_scheduler_process("--host", "127.0.0.1", "--port", "0")
    try:
        assert process.stdout is not None
        with trio.fail_after(BOUND):
            hello, _ = await read_json_line(process.stdout)
        assert hello["pid"] == process.pid
        yield str(hello["address"])
        with trio.CancelScope(shield=True):
            await ask_to_close(process)
    finally:
        with trio.CancelScope(shield=True):
            await finish(process)
    assert process.returncode == EXIT_OK


@dataclass
class ProcessCluster:
    address: str
    nannies: list[Nanny]


@pytest.fixture
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[ProcessCluster]:
    """A scheduler process and two nannies; threads per worker: the indirect parameter, or 2."""
    nthreads = int(getattr(request, "param", 2))
    async with scheduler_process() as address:
        nannies = [
            Nanny(address, name=f"w{i}", nthreads=nthreads, env={"PYTHONPATH": WORKER_PYTHONPATH})
            for i in range(2)
        ]
        async with trio.open_nursery() as nursery:
            with trio.fail_after(BOUND):
                async with trio.open_nursery() as starting:  # both workers start at once
                    for nanny in nannies:
                        starting.start_soon(nursery.start, nanny.serve)
            try:
                yield ProcessCluster(address, nannies)
            finally:
                async with trio.open_nursery() as closing:
                    for nanny in nannies:
                        closing.start_soon(nanny.close)


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def live_worker(nanny: Nanny) -> int:
    """The pid of the nanny's worker once it is a live process (not one that just died)."""
    pid = await nanny.wait_for_worker()
    while not alive(pid):
        pid = await nanny.wait_for_worker(pid_not=pid)
    return pid


# --------------------------------------------------------------- the scheduler process


@pytest.mark.parametrize("how", ["close-line", "stdin-eof", "sigterm", "sigint"])
async def test_scheduler_process_serves_and_closes_gracefully(how: str) -> None:
    process = await open_scheduler_process(stderr=PIPE)
    assert process.stdout is not None
    assert process.stdin is not None
    with trio.fail_after(BOUND):
        hello, rest = await read_json_line(process.stdout)
    assert hello["pid"] == process.pid
    assert hello["address"].startswith("tcp://127.0.0.1:")

    def scheduler_pid() -> int:
        with Client(hello["address"]) as client:
            return int(client.scheduler_info()["pid"])

    assert await trio.to_thread.run_sync(scheduler_pid) == process.pid
    if how == "close-line":
        await ask_to_close(process)
    elif how == "stdin-eof":  # what a dead parent looks like
        await process.stdin.aclose()
    else:
        process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    out, err = await finish(process)
    assert process.returncode == EXIT_OK
    assert rest + out == b""  # stdout carried the one JSON line and nothing else
    why = {
        "close-line": b"its parent process asked it to close",
        "stdin-eof": b"its stdin was closed",
        "sigterm": b"it received SIGTERM",
        "sigint": b"it received SIGINT",
    }[how]
    assert b"Closing the scheduler because " + why in err
    lines = err.splitlines()
    assert lines
    assert all(LOG_LINE.match(line) for line in lines), err.decode()
    assert b" - WARNING - " not in err


async def test_scheduler_process_that_cannot_listen_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await open_scheduler_process("--port", str(port), stderr=PIPE)
        out, err = await finish(process)  # its stdin stays open: it fails by itself
    assert process.returncode == EXIT_FAILED
    assert out == b""
    assert f"The scheduler on 127.0.0.1 port {port} failed".encode() in err
    assert b"Address already in use" in err


# ------------------------------------------------------------------- the cluster


async def test_sync_client_submit_map_gather_scatter_and_a_thousand_tasks(
    cluster: ProcessCluster,
) -> None:
    def work() -> None:
        with Client(cluster.address) as client:
            client.wait_for_workers(2, timeout=BOUND)
            assert client.submit(inc, 1).result(timeout=BOUND) == 2
            assert client.gather(client.map(inc, range(100))) == list(range(1, 101))
            data = client.scatter([1, 2, 3])
            assert client.gather(client.map(inc, data)) == [2, 3, 4]
            assert client.submit(add, *data[:2]).result(timeout=BOUND) == 3
            assert client.gather(client.scatter({"x": 7})) == {"x": 7}

            # 250 leaves, three layers of 250 adds (each on two futures of the layer
            # before, so data moves between the workers), and a sum: 1,001 tasks
            graph = layered_graph(client, add, client.map(inc, range(250)), 3)
            total = client.submit(sum, graph[-1])
            expected = expected_layers([x + 1 for x in range(250)], 3)
            assert total.result(timeout=BOUND) == sum(expected[-1])
            assert client.gather(graph) == expected
            workers = client.scheduler_info()["workers"]
            assert sorted(w["name"] for w in workers.values()) == ["w0", "w1"]
            assert all(w["stored"] > 0 for w in workers.values())  # both did some of the work

    await trio.to_thread.run_sync(work)


async def test_sigkilled_worker_is_replaced_and_its_keys_recomputed(
    cluster: ProcessCluster,
) -> None:
    victim = cluster.nannies[0]
    n, layers = 40, 3
    client = await trio.to_thread.run_sync(Client, cluster.address)
    try:

        def start() -> tuple[list[list[Any]], Any, int]:
            client.wait_for_workers(2, timeout=BOUND)
            graph = layered_graph(client, slow_add, client.map(slow_inc, range(n)), layers)
            total = client.submit(sum, graph[-1])
            wait(graph[0], timeout=BOUND)
            stored = client.scheduler_info()["workers"][victim.worker_address]["stored"]
            return graph, total, stored

        graph, total, stored_on_victim = await trio.to_thread.run_sync(start)
        old = victim.worker_pid
        assert old is not None
        assert stored_on_victim > 0  # it holds results that its death loses
        assert not total.done()  # the graph still runs: three layers of 40 x 30 ms to go
        os.kill(old, signal.SIGKILL)

        with trio.fail_after(BOUND):
            new = await victim.wait_for_worker(pid_not=old)
        assert new != old
        assert victim.restarts == 1
        await trio.to_thread.run_sync(client.wait_for_workers, 2, BOUND)

        def results() -> tuple[list[list[int]], int, dict[str, Any]]:
            return client.gather(graph), total.result(timeout=BOUND), client.scheduler_info()

        values, total_value, info = await trio.to_thread.run_sync(results)
        expected = expected_layers([x + 1 for x in range(n)], layers)
        assert values == expected  # the first layer's lost keys included
        assert total_value == sum(expected[-1])
        assert victim.worker_address in info["workers"]
        assert sorted(w["name"] for w in info["workers"].values()) == ["w0", "w1"]
        assert cluster.nannies[1].restarts == 0
    finally:
        await trio.to_thread.run_sync(client.close)


@pytest.mark.parametrize("cluster", [1], indirect=True, ids=["one-thread-workers"])
async def test_task_killing_its_worker_errs_with_killed_worker(cluster: ProcessCluster) -> None:
    def work() -> tuple[str, BaseException]:
        with Client(cluster.address) as client:
            client.wait_for_workers(2, timeout=BOUND)
            # Every task processing on a worker that dies counts that death, so the
            # good work goes first: with one thread per worker, run in priority order,
            # it runs before the bad task wherever both land, and dies with no worker.
            good = client.map(slow_inc, range(20))
            total = client.submit(sum, good)
            bad = client.submit(kill_own_worker, pure=False)
            error = bad.exception(timeout=BOUND)
            assert client.gather(good) == list(range(1, 21))
            assert total.result(timeout=BOUND) == sum(range(1, 21))
            with pytest.raises(KilledWorker):
                bad.result(timeout=BOUND)
            return bad.key, error

    key, error = await trio.to_thread.run_sync(work)
    assert isinstance(error, KilledWorker)
    assert error.key == key
    assert error.allowed_failures == 3
    assert repr(key) in str(error)
    # the default allowed failures is 3: the fourth death erred it, and each death was
    # followed by a new worker process
    with trio.fail_after(BOUND):
        for nanny in cluster.nannies:
            await live_worker(nanny)
    assert sum(nanny.restarts for nanny in cluster.nannies) == 4

    def still_works() -> int:
        with Client(cluster.address) as client:
            client.wait_for_workers(2, timeout=BOUND)
            return int(client.submit(inc, 41).result(timeout=BOUND))

    assert await trio.to_thread.run_sync(still_works) == 42
