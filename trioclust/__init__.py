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
    Event,
    Future,
    Lock,
    MultiLock,
    NannyPlugin,
    Queue,
    SchedulerPlugin,
    Semaphore,
    Variable,
    WorkerPlugin,
    as_completed,
    fire_and_forget,
    get_client,
    wait,
    worker_client,
)
from trioclust.client.collections import futures_of
from trioclust.client.performance_report import performance_report
from trioclust.client.progress import progress
from trioclust.client.task_stream import get_task_stream
from trioclust.deploy import Adaptive, Cluster, LocalCluster, SLURMCluster, SSHCluster
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
from trioclust.runtime.worker import get_worker, rejoin, secede
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
    "Event",
    "Future",
    "FutureCancelledError",
    "HandshakeTimeout",
    "InvalidTransition",
    "KilledWorker",
    "LocalCluster",
    "Lock",
    "LostData",
    "MultiLock",
    "Nanny",
    "NannyClosedError",
    "NannyPlugin",
    "ProtocolError",
    "Queue",
    "RemoteError",
    "SLURMCluster",
    "SSHCluster",
    "Scheduler",
    "SchedulerLostError",
    "SchedulerPlugin",
    "Security",
    "Semaphore",
    "TLSConnectionError",
    "TransportHandshakeError",
    "TrioclustError",
    "Variable",
    "WebSocketHandshakeError",
    "Worker",
    "WorkerPlugin",
    "WorkerStartError",
    "__version__",
    "as_completed",
    "fire_and_forget",
    "futures_of",
    "get_client",
    "get_task_stream",
    "get_worker",
    "performance_report",
    "progress",
    "rejoin",
    "secede",
    "wait",
    "worker_client",
]
