"""An in-process cluster on a thread, for synchronous tests and examples.

``with cluster(n_workers=2) as (scheduler_address, worker_addresses):`` runs a
Scheduler and Workers in one trio loop on a thread of its own, so plain
synchronous code (a synchronous ``Client``) can use them; leaving the block
closes them all and joins the thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import trio

from trioclust.runtime.scheduler import Scheduler
from trioclust.runtime.worker import Worker


@contextlib.contextmanager
def cluster(
    n_workers: int = 2, nthreads: int = 1, **scheduler_kwargs: Any
) -> Iterator[tuple[str, list[str]]]:
    """Run a Scheduler and ``n_workers`` Workers on a background thread.

    Args:
        n_workers: how many workers to start.
        nthreads: threads per worker.
        **scheduler_kwargs: passed to :class:`Scheduler`.

    Yields:
        ``(scheduler_address, [worker_address, ...])``.
    """
    ready = threading.Event()
    stop: list[trio.Event] = []
    token: list[trio.lowlevel.TrioToken] = []
    addresses: list[Any] = []
    errors: list[BaseException] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            scheduler = Scheduler(**scheduler_kwargs)
            await nursery.start(scheduler.serve)
            workers = [Worker(scheduler.address, nthreads=nthreads) for _ in range(n_workers)]
            for worker in workers:
                await nursery.start(worker.serve)
            addresses.append((scheduler.address, [w.address for w in workers]))
            stop.append(trio.Event())
            token.append(trio.lowlevel.current_trio_token())
            ready.set()
            await stop[0].wait()
            for worker in workers:
                await worker.close()
            await scheduler.close()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="trioclust-test-cluster")
    thread.start()
    ready.wait()
    if errors:
        thread.join()
        raise errors[0]
    try:
        yield addresses[0]
    finally:
        trio.from_thread.run_sync(stop[0].set, trio_token=token[0])
        thread.join()
        if errors:
            raise errors[0]
