"""trioclust: dask.distributed's Futures API on Trio's structured concurrency.

Change ``from dask.distributed import Client`` into ``from trioclust import
Client`` and keep working.
"""

from trioclust.client import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    Client,
    DoneAndNotDoneFutures,
    Future,
    FutureCancelledError,
    SchedulerLostError,
    as_completed,
    wait,
)
from trioclust.comm import CommClosedError
from trioclust.core.errors import KilledWorker, LostData
from trioclust.deploy import LocalCluster
from trioclust.protocol import ProtocolError
from trioclust.runtime import Nanny, Scheduler, Worker
from trioclust.security import Security
from trioclust.transport.errors import EncryptionRequiredError, TLSConnectionError

CancelledError = FutureCancelledError

__version__ = "0.1.0"

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "CancelledError",
    "Client",
    "CommClosedError",
    "DoneAndNotDoneFutures",
    "EncryptionRequiredError",
    "Future",
    "FutureCancelledError",
    "KilledWorker",
    "LocalCluster",
    "LostData",
    "Nanny",
    "ProtocolError",
    "Scheduler",
    "SchedulerLostError",
    "Security",
    "TLSConnectionError",
    "Worker",
    "__version__",
    "as_completed",
    "wait",
]
