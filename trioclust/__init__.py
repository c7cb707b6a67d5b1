"""trioclust: dask.distributed's Futures API on Trio's structured concurrency.

Change ``from dask.distributed import Client`` into ``from trioclust import
Client`` and keep working.
"""

from trioclust.client import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    Actor,
    ActorFuture,
    Client,
    DoneAndNotDoneFutures,
    Future,
    NannyPlugin,
    SchedulerPlugin,
    WorkerPlugin,
    as_completed,
    wait,
)
from trioclust.client.performance_report import performance_report
from trioclust.client.progress import progress
from trioclust.deploy import Adaptive, Cluster, LocalCluster, SSHCluster
from trioclust.errors import (
    ActorLostError,
    ClusterStartError,
    CommClosedError,
    ConnectTimeout,
    EncryptionRequiredError,
    FutureCancelledError,
    HandshakeTimeout,
    InvalidTransition,
    KilledWorker,
    LostData,
    NannyClosedError,
    ProtocolError,
    RemoteError,
    SchedulerLostError,
    TLSConnectionError,
    TransportHandshakeError,
    TrioclustError,
    WebSocketHandshakeError,
    WorkerStartError,
)
from trioclust.runtime import Nanny, Scheduler, Worker
from trioclust.security import Security

CancelledError = FutureCancelledError

__version__ = "0.1.0"

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Actor",
    "ActorFuture",
    "ActorLostError",
    "Adaptive",
    "CancelledError",
    "Client",
    "Cluster",
    "ClusterStartError",
    "CommClosedError",
    "ConnectTimeout",
    "DoneAndNotDoneFutures",
    "EncryptionRequiredError",
    "Future",
    "FutureCancelledError",
    "HandshakeTimeout",
    "InvalidTransition",
    "KilledWorker",
    "LocalCluster",
    "LostData",
    "Nanny",
    "NannyClosedError",
    "NannyPlugin",
    "ProtocolError",
    "RemoteError",
    "SSHCluster",
    "Scheduler",
    "SchedulerLostError",
    "SchedulerPlugin",
    "Security",
    "TLSConnectionError",
    "TransportHandshakeError",
    "TrioclustError",
    "WebSocketHandshakeError",
    "Worker",
    "WorkerPlugin",
    "WorkerStartError",
    "__version__",
    "as_completed",
    "performance_report",
    "progress",
    "wait",
]
