"""Clients inside tasks: ``get_client()`` and ``worker_client()``, as in Dask.

A task reaches its worker through :mod:`trioclust.task_context`, which the
worker binds around each task. Thread tasks of one worker share one
synchronous :class:`Client`, made by the first ``get_client()`` from that
task's own thread and closed with the worker; coroutine tasks share one
asynchronous client, opened in the worker's event loop before the first
coroutine task whose code names ``get_client`` or ``worker_client`` runs
(``await`` its methods there). Outside of tasks, ``get_client()`` returns the
newest client of this process that is still running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from trioclust import task_context
from trioclust.client.client import Client, _clients


def get_client(address: str | None = None, timeout: float | None = None) -> Client:
    """A client for the calling task (``dask.distributed.get_client``).

    Inside a task: the client its worker's tasks share, connected to the
    worker's scheduler (synchronous on a thread, asynchronous in a coroutine
    task). Elsewhere: the newest running client of this process.

    Args:
        address: the scheduler; only the one of the worker (or of the
            current client) is served.
        timeout: seconds the first ``get_client()`` on a worker thread may
            take to connect; default ``comm.timeouts.connect``.

    Raises:
        ValueError: outside of a task with no running client, or for another
            scheduler's address.
    """
    context = task_context.current_task()
    if context is not None:
        worker = context.worker
        if address is not None and address != worker.scheduler_address:
            raise ValueError(
                f"get_client({address!r}) in a task: this worker's scheduler is "
                f"{worker.scheduler_address!r}; start a Client({address!r}) for another one"
            )
        client: Client = worker.get_task_client(timeout)
        return client
    current = Client.current()
    if address is not None and current.scheduler_address != address:
        raise ValueError(
            f"No client connected to {address!r} (the current one is at {current.scheduler_address!r})"
        )
    return current


@contextmanager
def worker_client(timeout: float | None = None, separate_thread: bool = True) -> Iterator[Client]:
    """The task's client, with the task seceded from its worker's threads
    meanwhile (``dask.distributed.worker_client``).

    Use it in a task that submits tasks and waits for them: its thread stops
    counting against the worker's threads until the block ends, so the tasks
    it waits for can run even on a single-thread worker.

    Args:
        timeout: seconds to connect; default ``comm.timeouts.connect``.
        separate_thread: secede while in the block (the default).

    Example:
        >>> def fib(n):
        ...     if n < 2:
        ...         return n
        ...     with worker_client() as client:
        ...         a = client.submit(fib, n - 1)
        ...         b = client.submit(fib, n - 2)
        ...         a, b = client.gather([a, b])
        ...     return a + b
    """
    context = task_context.current_task()
    if context is None:
        raise ValueError("worker_client() works only inside a task running on a worker")
    client = get_client(timeout=timeout)
    if separate_thread:
        context.secede()
    try:
        yield client
    finally:
        if separate_thread:
            context.rejoin()


# A worker's clients serve its tasks only: they never become Client.current()
# of the process (in-process workers share it with the user's client).


def _sync_client(worker: Any, timeout: float | None) -> Client:
    client = Client(
        worker.scheduler_address, security=worker.security, name=f"worker-{worker.name}", timeout=timeout
    )
    _clients.pop(id(client), None)
    return client


@asynccontextmanager
async def _async_client(worker: Any) -> AsyncIterator[Client]:
    client = Client(
        worker.scheduler_address, asynchronous=True, security=worker.security,
        name=f"worker-{worker.name}-async",
    )
    async with client:
        _clients.pop(id(client), None)
        yield client


task_context.sync_client_factory = _sync_client
task_context.async_client_factory = _async_client
