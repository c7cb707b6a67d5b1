"""The client: futures, the synchronous and asynchronous Client, waiting helpers.

Imports anyio only, never trio: it runs under any anyio backend.
"""

from trioclust.client.actors import Actor, ActorFuture
from trioclust.client.client import Client
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
from trioclust.errors import FutureCancelledError, SchedulerLostError

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Actor",
    "ActorFuture",
    "Client",
    "DoneAndNotDoneFutures",
    "Future",
    "FutureCancelledError",
    "NannyPlugin",
    "SchedulerLostError",
    "SchedulerPlugin",
    "WorkerPlugin",
    "as_completed",
    "wait",
]
