"""Shared fixtures: the leak check every test runs under, and backend choice."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import psutil
import pytest

if TYPE_CHECKING:
    from trioclust import Scheduler, Worker

# The state machines check themselves throughout the suite (an unknown
# transition raises InvalidTransition instead of being dropped), here and in
# the worker and scheduler processes the tests start: config reads these.
os.environ.setdefault("TRIOCLUST_SCHEDULER__VALIDATE", "true")
os.environ.setdefault("TRIOCLUST_WORKER__VALIDATE", "true")

# Idle threads of the libraries' own process-wide caches (trio.to_thread,
# anyio's asyncio worker pool): they belong to the library, not to a test,
# and exit by themselves after a while.
_LIBRARY_CACHE_THREADS = ("Trio thread", "AnyIO worker thread")


def _threads() -> set[threading.Thread]:
    return {
        t
        for t in threading.enumerate()
        if t.is_alive() and not t.name.startswith(_LIBRARY_CACHE_THREADS)
    }


def _sockets(proc: psutil.Process) -> set[int]:
    return {c.fd for c in proc.net_connections(kind="all") if c.fd != -1}


def _children(proc: psutil.Process) -> set[int]:
    return {p.pid for p in proc.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


@pytest.fixture(autouse=True)
def check_leaks() -> Iterator[None]:
    """Fail a test that leaves threads, child processes or sockets behind."""
    proc = psutil.Process(os.getpid())
    threads, sockets, children = _threads(), _sockets(proc), _children(proc)
    yield
    # Things closed by the test may take a moment to finish exiting (a thread
    # returning from its last line, the kernel reaping a child): allow that,
    # bounded, then report whatever is still there.
    deadline = time.monotonic() + 5
    while True:
        gc.collect()
        extra_threads = _threads() - threads
        extra_sockets = _sockets(proc) - sockets
        extra_children = _children(proc) - children
        if not (extra_threads or extra_sockets or extra_children) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    problems = []
    if extra_threads:
        problems.append(f"threads left running: {sorted(t.name for t in extra_threads)}")
    if extra_children:
        problems.append(f"child processes left running: {sorted(extra_children)}")
    if extra_sockets:
        conns = [c for c in proc.net_connections(kind="all") if c.fd in extra_sockets]
        problems.append(f"sockets left open: {conns}")
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every ``@pytest.mark.anyio`` test runs under trio and under asyncio
    (client and transport code is tested under both); a module that needs one
    overrides this fixture, a test parametrizes ``anyio_backend``."""
    return str(request.param)


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Scheduler, Worker, Worker]]:
    """An in-process scheduler with two one-thread workers, on the test's event loop."""
    from trioclust import Scheduler, Worker

    async with Scheduler() as s, Worker(s.address) as a, Worker(s.address) as b:
        yield s, a, b
