"""ThreadPool.secede / rejoin: a job that waits on others gives its place to a
new thread, and takes one back once a place is free."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest
import trio

from trioclust.runtime.thread_pool import ThreadPool

pytestmark = pytest.mark.trio

WAIT = 10  # seconds any wait here may take before it is a failure


class _WatchedJobs(queue.SimpleQueue[Any]):
    """The pool's job queue, setting ``rejoin_queued`` when a rejoin request goes in."""

    def __init__(self) -> None:
        super().__init__()
        self.rejoin_queued = threading.Event()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        if type(item).__name__ == "_Rejoin":
            self.rejoin_queued.set()


async def test_a_seceded_job_is_replaced_and_rejoins_when_a_place_is_free() -> None:
    pool = ThreadPool(1, short_job=0.0)
    jobs = pool._jobs = _WatchedJobs()
    pool.start()
    order: list[str] = []
    other_running = threading.Event()
    other_may_end = threading.Event()
    seceded_may_rejoin = threading.Event()
    results: list[Any] = []
    all_done = trio.Event()

    def done(value: Any) -> None:
        results.append(value)
        if len(results) == 2:
            all_done.set()

    def seceding() -> str:
        assert pool.secede()
        assert not pool.secede()  # once only
        order.append("seceded")
        assert seceded_may_rejoin.wait(WAIT)
        pool.rejoin()  # waits for the other job's place
        order.append("rejoined")
        return "seceding"

    def other() -> str:
        other_running.set()
        order.append("other runs")
        assert other_may_end.wait(WAIT)
        order.append("other ends")
        return "other"

    try:
        pool.submit(seceding, done)
        pool.submit(other, done)  # one thread only: it runs because the first seceded
        with trio.fail_after(WAIT):
            await trio.to_thread.run_sync(other_running.wait, WAIT)
        assert pool.threads_alive == 2
        seceded_may_rejoin.set()
        # its request is queued: it waits for the other job's place
        assert await trio.to_thread.run_sync(jobs.rejoin_queued.wait, WAIT)
        assert order[-1] != "rejoined"
        other_may_end.set()
        with trio.fail_after(WAIT):
            await all_done.wait()
        assert sorted(order[:2]) == ["other runs", "seceded"]
        assert order[2:] == ["other ends", "rejoined"]
        assert sorted(results) == ["other", "seceding"]
        assert pool.peak_threads == 2
        assert not pool.secede()  # not a pool thread: nothing to do
        pool.rejoin()
    finally:
        await pool.aclose(WAIT)
    assert pool.threads_alive == 0


async def test_a_seceded_job_that_never_rejoins_ends_its_thread() -> None:
    pool = ThreadPool(1, short_job=0.0)
    pool.start()
    got: list[Any] = []
    finished = trio.Event()
    threads: list[threading.Thread] = []

    def seceding() -> int:
        pool.secede()
        threads.append(threading.current_thread())
        return 1

    def collect(value: Any) -> None:
        got.append(value)
        finished.set()

    try:
        pool.submit(seceding, collect)
        with trio.fail_after(WAIT):
            await finished.wait()
        await trio.to_thread.run_sync(threads[0].join, WAIT)  # it ends with its job
        assert not threads[0].is_alive()
        assert pool.threads_alive == 1
        assert got == [1]
    finally:
        await pool.aclose(WAIT)
    assert pool.threads_alive == 0
