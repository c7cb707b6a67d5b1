"""The worker's ThreadPool: results come back in the event loop's thread."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from trioclust.runtime.thread_pool import ThreadPool

pytestmark = pytest.mark.trio


def _collector(got: list[Any], count: int, event: trio.Event) -> Callable[[Any], None]:
    """A ``done`` callback appending to ``got`` that sets ``event`` at ``count`` results."""

    def done(value: Any) -> None:
        got.append(value)
        if len(got) == count:
            event.set()

    return done


@asynccontextmanager
async def timed_pool(nthreads: int, got: list[Any]) -> AsyncIterator[ThreadPool]:
    """A running pool whose jobs count as short (waited for up to 30 s: longer
    than any job here takes, on any machine), after one job went through the
    event loop (a pool waits only once it has timed a job); its result is
    ``got[0]``."""
    pool = ThreadPool(nthreads, short_job=1.0, short_wait=30.0)
    pool.start()
    try:
        first = trio.Event()
        pool.submit(lambda: "first", _collector(got, 1, first))
        assert got == [], "no job has been timed yet: nothing is known to be short"
        with trio.fail_after(10):
            await first.wait()
        assert 0.0 < pool.mean_duration < 1.0
        yield pool
    finally:
        await pool.aclose(5)


async def test_a_short_job_alone_is_waited_for_and_a_longer_one_handed_back_later() -> None:
    got: list[Any] = []
    async with timed_pool(1, got) as pool:
        pool.submit(lambda: 2, got.append)
        assert got == ["first", 2], "a short job alone: its result is in when submit returns"
        # a job that outlasts the wait comes back through the event loop
        pool.short_wait = 0.001
        gate = threading.Event()
        third = trio.Event()
        pool.submit(lambda: gate.wait(10) and 3, _collector(got, 3, third))
        assert got == ["first", 2]
        gate.set()
        with trio.fail_after(10):
            await third.wait()
        assert got == ["first", 2, 3]


async def test_a_job_is_not_waited_for_while_another_is_in_flight() -> None:
    got: list[Any] = []
    async with timed_pool(2, got) as pool:
        gate = threading.Event()
        rest = trio.Event()
        pool.short_wait = 0.001  # the first, gated, is waited for this long
        pool.submit(lambda: gate.wait(10) and 1, _collector(got, 3, rest))
        pool.short_wait = 30.0
        pool.submit(lambda: 2, _collector(got, 3, rest))
        assert got == ["first"], "the second was not waited for: the first is still in flight"
        gate.set()
        with trio.fail_after(10):
            await rest.wait()
        assert sorted(got[1:]) == [1, 2]


async def test_a_job_submitted_while_results_are_handed_over_is_not_waited_for() -> None:
    # a chain: each result submits the next job, as a finished task starts the
    # one queued behind it; waiting for each inside the last one's delivery
    # would nest as deep as the chain is long
    got: list[Any] = []
    async with timed_pool(1, got) as pool:
        n = 3000  # deeper than the recursion limit, were each one waited for inside the last
        last = trio.Event()

        def chain(value: Any) -> None:
            got.append(value)
            if value < n:
                pool.submit(lambda: value + 1, chain)
                assert got[-1] == value, "submitted from a delivery: handed back later"
            else:
                last.set()

        pool.submit(lambda: 0, chain)
        assert got == ["first", 0], "the chain's first job, alone: waited for"
        with trio.fail_after(30):
            await last.wait()
        assert got == ["first", *range(n + 1)]
