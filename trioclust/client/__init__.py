"""The client: futures, the synchronous and asynchronous Client, waiting helpers.

Imports anyio only, never trio: it runs under any anyio backend.
"""

from trioclust.client.actors import Actor, ActorFuture
from trioclust.client.client import Client
from trioclust.client.coordination import (
    Event,
    Lock,
    MultiLock,
    Queue,
    Semaphore,
    Variable,
    fire_and_forget,
)
from trioclust.client.futures import Future
from trioclust.client.plugins import NannyPlugin, SchedulerPlugin, WorkerPlugin
from trioclust.client.waiting import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    DoneAndNotDoneFutures,
    as_completed,
    wait,
)
from trioclust.client.worker_client import get_client, worker_client
from trioclust.errors import FutureCancelledError, SchedulerLostError

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Actor",
    "ActorFuture",
    "Client",
    "DoneAndNotDoneFutures",
    "Event",
    "Future",
    "FutureCancelledError",
    "Lock",
    "MultiLock",
    "NannyPlugin",
    "Queue",
    "SchedulerLostError",
    "SchedulerPlugin",
    "Semaphore",
    "Variable",
    "WorkerPlugin",
    "as_completed",
    "fire_and_forget",
    "get_client",
    "wait",
    "worker_client",
]
