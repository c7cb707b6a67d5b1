"""LoopThread and HostedContext: loops on threads, entered and left from plain code."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
import pytest

from trioclust import config, loop_thread
from trioclust.loop_thread import CallSoon, HostedContext, LoopThread, call_soon_here


class Owner:
    """What interpreter exit closes: records the order."""

    def __init__(self, name: str, closed: list[str]) -> None:
        self.name = name
        self.closed = closed
        self.hosted: HostedContext | None = None

    def close(self) -> None:
        if self.hosted is not None:
            hosted, self.hosted = self.hosted, None
            hosted.close()
            self.closed.append(self.name)


@asynccontextmanager
async def recording(name: str, events: list[str]) -> AsyncIterator[None]:
    events.append(f"enter {name}")
    try:
        yield
    finally:
        events.append(f"exit {name}")


def test_a_loop_thread_runs_calls_and_stops() -> None:
    loop = LoopThread(name="test-loop")
    portal = loop.start()
    assert portal.call(anyio.sleep, 0) is None
    assert portal.call(threading.current_thread).name == "test-loop"
    assert loop.stop()
    with pytest.raises(RuntimeError, match="not running"):
        loop.portal  # noqa: B018


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])
async def test_a_loop_thread_stops_from_inside_another_event_loop(anyio_backend: str) -> None:
    loop = LoopThread(name="test-loop")
    await anyio.to_thread.run_sync(loop.start)
    assert loop.stop()  # no portal call: it works from a trio thread too


def test_entering_fails_with_the_managers_error_and_leaves_no_thread() -> None:
    @asynccontextmanager
    async def failing() -> AsyncIterator[None]:
        raise ValueError("cannot start")
        yield

    with pytest.raises(ValueError, match="cannot start"):
        HostedContext(Owner("x", []), failing(), name="test-failing")
    assert not any(t.name == "test-failing" for t in threading.enumerate())


def test_exit_closes_newest_first_and_a_shared_loop_does_not_hold_it_up() -> None:
    # a cluster's loop, and a client inside it: the way Client(LocalCluster(processes=False)) is
    closed: list[str] = []
    events: list[str] = []
    cluster, client = Owner("cluster", closed), Owner("client", closed)
    cluster.hosted = HostedContext(cluster, recording("cluster", events), name="test-cluster")
    client.hosted = HostedContext(
        client, recording("client", events), name="unused", loop=cluster.hosted.loop
    )
    loop_thread._close_open()
    assert closed == ["client", "cluster"]
    assert events == ["enter cluster", "enter client", "exit client", "exit cluster"]


def test_stopping_a_loop_exits_what_is_still_open_in_it() -> None:
    events: list[str] = []
    cluster = Owner("cluster", [])
    cluster.hosted = HostedContext(cluster, recording("cluster", events), name="test-cluster")
    left_open = HostedContext(
        Owner("client", []), recording("client", events), name="unused", loop=cluster.hosted.loop
    )
    cluster.close()  # the client inside was never closed: its exit runs on the cancellation
    assert events == ["enter cluster", "enter client", "exit cluster", "exit client"]
    left_open.close()  # a second close of it does nothing, and does not wait


def test_closing_a_stuck_context_gives_up_in_bounded_time(caplog: pytest.LogCaptureFixture) -> None:
    release: list[tuple[CallSoon, anyio.Event]] = []

    @asynccontextmanager
    async def stuck() -> AsyncIterator[None]:
        yield
        event = anyio.Event()
        release.append((call_soon_here(), event))
        with anyio.CancelScope(shield=True):
            await event.wait()

    with config.set(**{"runtime.close-timeout": 0.05}):
        hosted = HostedContext(Owner("stuck", []), stuck(), name="test-stuck")
        thread = next(t for t in threading.enumerate() if t.name == "test-stuck")
        with caplog.at_level(logging.WARNING, logger="trioclust.loop_thread"):
            hosted.close()  # gives up after 4 close timeouts, then 1 to join
    assert "did not finish in time" in caplog.text
    assert "did not stop in time" in caplog.text
    assert thread.is_alive()
    call_soon, event = release[0]
    call_soon(event.set)
    thread.join(10)
    assert not thread.is_alive()
