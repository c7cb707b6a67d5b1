"""A task cancelled while it runs in a thread holds that thread, and nothing
queues behind it (issue 18: 10 of 20 new tasks used to wait 50 s)."""

from __future__ import annotations

import threading

import pytest
import trio

from trioclust import Client, Scheduler, Worker

release = threading.Event()
started = threading.Event()


def never_ending() -> int:
    started.set()
    release.wait(60)  # "never": until the test ends
    return 0


@pytest.mark.trio
async def test_tasks_go_around_a_thread_held_by_a_cancelled_task() -> None:
    release.clear()
    started.clear()

    async with Scheduler(dashboard_address=None) as s, Worker(s.address, name="a"), Worker(
        s.address, name="b"
    ):
        try:
            async with Client(s.address, asynchronous=True) as client:
                stuck = client.submit(never_ending, pure=False)
                await trio.to_thread.run_sync(started.wait, 30)
                held_on = s.state.tasks[stuck.key].processing_on
                assert held_on is not None
                await client.cancel(stuck)
                futures = client.map(lambda i: i + 1, range(20))
                with trio.fail_after(10):  # promptly: not behind the held thread
                    results = await client.gather(futures)
                assert results == list(range(1, 21))
                assert s.state.workers[held_on.address].held == 1
                info = await client.scheduler_info()
                assert info["workers"][held_on.address]["threads_held"] == 1
        finally:
            release.set()
