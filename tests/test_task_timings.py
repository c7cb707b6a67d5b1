"""Workers report when each task ran, on which thread, and what it fetched;
the scheduler's task stream records those timings instead of estimating."""

from __future__ import annotations

import operator
import threading
import time

import pytest

from trioclust import Client, Scheduler, Worker
from trioclust.core import events as ev
from trioclust.core import instructions as ins
from trioclust.dashboard import TaskStream
from trioclust.runtime.worker import ClockOffset


def thread_ident() -> int:
    return threading.get_ident()


def spin(x: int) -> int:
    deadline = time.perf_counter() + 0.002  # busy, not asleep: a measurable run
    while time.perf_counter() < deadline:
        pass
    return x


def fail(x: int) -> int:
    raise ValueError(x)


# ----------------------------------------------------------- pure logic
def test_clock_offset_prefers_the_shortest_round_trip() -> None:
    clock = ClockOffset(keep=3)
    assert clock.offset == 0.0
    # the remote clock is 100 s ahead; the first answer sat 2 s in a busy loop
    assert clock.add(sent=10.0, received=12.0, remote=111.9) == pytest.approx(100.9)
    assert clock.add(sent=20.0, received=20.002, remote=120.001) == pytest.approx(100.0)
    assert clock.add(sent=30.0, received=31.0, remote=130.9) == pytest.approx(100.0)  # kept the best
    clock.add(40.0, 40.5, 140.25)
    clock.add(50.0, 50.5, 150.25)
    # the 2 ms sample fell out of the last three: the best of those is 0.5 s
    assert clock.offset == pytest.approx(100.0)


def test_task_stream_takes_the_workers_timings() -> None:
    now = [100.0]
    stream = TaskStream(clock=lambda: now[0])
    stream.observe([ev.AddWorker(address="w", nthreads=1, name="w", memory_limit=0, stimulus_id="s")], [])
    compute = [
        ins.ComputeTask(worker="w", key=k, run_spec=None, priority=0, stimulus_id="s")
        for k in ("a-1", "b-1")
    ]
    stream.observe([], compute)
    stream.finished("a-1", "other", "memory", 101.0, 102.0, 7, None, 10)  # stale: ignored
    stream.finished("a-1", "w", "memory", 100.5, 100.75, 7, [[100.1, 100.2, "v", 64]], 10)
    now[0] = 103.0
    stream.finished("b-1", "w", "erred", None, None)  # no timings: estimated
    a, b = stream.recent()
    assert (a.start, a.stop, a.thread, a.nbytes, a.timed) == (100.5, 100.75, 7, 10, True)
    assert a.transfers == ((100.1, 100.2, "v", 64),)
    assert a.as_dask() == {
        "key": "a-1", "worker": "w", "thread": 7, "status": "memory", "nbytes": 10,
        "startstops": [
            {"action": "transfer", "start": 100.1, "stop": 100.2, "source": "v"},
            {"action": "compute", "start": 100.5, "stop": 100.75},
        ],
        "id": 1, "prefix": "a",
    }
    # b waited for the worker's one thread, free again at a's stop
    assert (b.start, b.stop, b.status, b.timed) == (100.75, 103.0, "erred", False)
    # a later TaskFinished event for the same run changes nothing
    stream.observe([ev.TaskFinished(worker="w", key="a-1", nbytes=1, type_name="int", stimulus_id="s")], [])
    assert len(stream.recent()) == 2
    assert [r.key for r in stream.between(100.8, 104.0)] == ["b-1"]
    assert [r.key for r in stream.between(count=1)] == ["b-1"]


# ---------------------------------------------------------- real cluster
@pytest.mark.trio
async def test_finished_and_erred_tasks_carry_real_timings() -> None:
    async with Scheduler() as s, Worker(s.address, nthreads=2) as w:
        async with Client(s.address, asynchronous=True) as client:
            before = time.time()
            ident = await client.submit(thread_ident, pure=False)
            assert await client.submit(spin, 1) == 1
            with pytest.raises(ValueError):
                await client.submit(fail, 2)
            after = time.time()
        records = {r.prefix: r for r in s.task_stream.recent()}
        assert {"thread_ident", "spin", "fail"} <= set(records)
        assert all(r.timed for r in records.values())
        assert records["thread_ident"].thread == ident
        worker_threads = {t.ident for t in threading.enumerate() if t.name.startswith("trioclust-worker")}
        assert records["spin"].thread in worker_threads
        run = records["spin"]
        # the worker measured the run itself: at least the 2 ms it spun, and
        # between the client's clock readings (one machine, offset about 0)
        assert run.stop - run.start >= 0.002
        assert before - 0.1 <= run.sent <= run.start <= run.stop <= after + 0.1
        assert records["fail"].status == "erred"
        assert abs(w.clock.offset) < 0.5


@pytest.mark.trio
async def test_times_are_shifted_onto_the_schedulers_clock() -> None:
    async with Scheduler() as s, Worker(s.address) as w:
        w.clock.add(0.0, 0.0, 1000.0)  # as if the scheduler's clock ran 1000 s ahead
        w.clock.keep = 1
        async with Client(s.address, asynchronous=True) as client:
            assert await client.submit(spin, 3) == 3
        (run,) = s.task_stream.recent()
        assert run.start > time.time() + 900


@pytest.mark.trio
async def test_a_fetched_dependency_is_a_transfer_of_its_dependent() -> None:
    async with Scheduler() as s, Worker(s.address) as a, Worker(s.address) as b:
        async with Client(s.address, asynchronous=True) as client:
            x = await client.scatter(b"x" * 10_000, workers=[a.address])
            y = await client.scatter(b"y" * 20_000, workers=[b.address])
            assert len(await client.submit(operator.add, x, y)) == 30_000
        (run,) = [r for r in s.task_stream.recent() if r.prefix == "add"]
        (transfer,) = run.transfers
        start, stop, source, nbytes = transfer
        other = b.address if run.worker == a.address else a.address
        assert source == other
        assert nbytes >= 10_000
        assert start <= stop <= run.start


def test_prefix_totals_count_every_run_once_reading_has_begun() -> None:
    stream = TaskStream(maxlen=2, clock=lambda: 10.0)
    stream.observe([ev.AddWorker(address="w", nthreads=1, name="w", memory_limit=0, stimulus_id="s")], [])

    def run(key: str, status: str = "memory") -> None:
        stream.observe([], [ins.ComputeTask(worker="w", key=key, run_spec=None, priority=0, stimulus_id="s")])
        stream.finished(key, "w", status, 1.0, 1.5, 1, [[0.5, 0.75, "v", 8]])

    run("a-1")
    run("a-2")
    run("a-3")  # a-1 leaves the record unread: counted from the first read on
    totals = stream.prefix_totals()
    assert totals["a"]["memory"] == 2
    for i in range(4, 9):
        run(f"a-{i}")
    run("b-1", "erred")
    totals = stream.prefix_totals()
    assert (totals["a"]["memory"], totals["b"]["erred"]) == (7, 1)
    assert totals["a"]["compute_seconds"] == pytest.approx(3.5)
    assert totals["a"]["transfer_seconds"] == pytest.approx(1.75)
    assert stream.workers_added == 1
