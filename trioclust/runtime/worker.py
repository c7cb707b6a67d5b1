"""The Worker server: a thin trio shell around :class:`WorkerState`.

Theory of operation
-------------------
A worker connects to its scheduler first, so that it can listen and advertise
itself on the interface that reaches the scheduler; then it registers over
that link and keeps it for its life. Messages from the scheduler become core
events; the instructions that come back are carried out without blocking:

* ``Execute``: plain functions go to the worker's own :class:`ThreadPool`
  (``nthreads`` threads); coroutine functions run in the worker's nursery under
  a cancel scope, so ``CancelExecute`` really cancels them. Outcomes come back
  as ``ExecuteSucceeded`` / ``ExecuteFailed`` events.
* ``Gather``: a child task asks the peer for the keys over a pooled link.
* ``Send*``: one ``Link.send`` to the scheduler.

Each finished or failed task reports when its code ran (``start``/``stop``,
measured around the call on the thread that ran it), that thread's ident, and
the fetches of its dependencies from peers (``transfers``). The times are
taken with ``time.time()`` here and shifted onto the scheduler's clock by
:class:`ClockOffset`, which the replies to ``register-worker`` and to each
heartbeat (a request, answered with the scheduler's time) keep up to date.
The timings wait in ``_timings`` from the end of the run until the report
leaves, as small results wait in ``_inline``.

Peers and clients connect to the worker's own listener for ``get-data`` and
``update-data`` (scatter). If the scheduler link breaks, the worker drops all
its state (the scheduler has already rescheduled its work) and keeps trying
to reconnect for ``reconnect_timeout`` seconds; then it stops, with
``close_reason`` saying why.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any

import psutil
import trio

from trioclust import config, task_context
from trioclust.comm import Link
from trioclust.comm import connect as comm_connect
from trioclust.comm import serve as comm_serve
from trioclust.comm.link import error_reply
from trioclust.comm.pool import ConnectionPool
from trioclust.core import events as ev
from trioclust.core import instructions as ins
from trioclust.core.keys import Key
from trioclust.core.memory_policy import (
    MemoryPolicy,
    MemorySample,
    PauseWorker,
    ResumeWorker,
    SpillData,
    TrimMemory,
)
from trioclust.core.worker_state import WorkerState
from trioclust.core.worker_tasks import EXECUTING
from trioclust.errors import CommClosedError, ProtocolError, RemoteError
from trioclust.protocol import Serialized, serialize
from trioclust.protocol import messages as msgs
from trioclust.protocol.actors import ActorRef, CreateActor
from trioclust.protocol.run_spec import loads_task
from trioclust.protocol.task_spec import substitute
from trioclust.runtime import profiling
from trioclust.runtime.actor_calls import ActorCalls
from trioclust.runtime.execution import (
    Failure,
    Success,
    call_function,
    pack_failure,
    pack_success,
    run_sync,
)
from trioclust.runtime.log_capture import process_logs, server_label
from trioclust.runtime.nanny_plugins import NannyPipe
from trioclust.runtime.resources import parse_resources
from trioclust.runtime.server import Server
from trioclust.runtime.spill import SpillStore, memory_thresholds, trim_memory
from trioclust.runtime.thread_pool import ThreadPool
from trioclust.transport.addresses import parse_address, parse_host_port, unparse_host_port

if TYPE_CHECKING:
    from trioclust.security import Security

# schemes whose listen address is host:port (the rest, inproc, pick a name)
_HOST_PORT_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")

logger = logging.getLogger("trioclust.worker")

# transfer timings kept for dependencies no task here has used yet, at most
_MAX_PENDING_TRANSFERS = 4096


class ClockOffset:
    """The offset of another clock (the scheduler's) to this one, from round trips.

    Each sample is a request sent at ``sent`` and answered at ``received`` (this
    clock) carrying the other clock's ``remote`` time: the offset is taken as
    ``remote - (sent + received) / 2``, which is wrong by at most half the round
    trip. The estimate is the sample with the shortest round trip among the
    last ``keep``: a reply delayed by a busy loop says little about the clocks.

    Args:
        keep: how many recent samples to choose from.
    """

    __slots__ = ("_samples", "keep", "offset")

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._samples: list[tuple[float, float]] = []  # (round trip, offset)
        #: seconds to add to this clock's times to get the other's; 0.0 before a sample
        self.offset = 0.0

    def add(self, sent: float, received: float, remote: float) -> float:
        """Take one round trip into account; returns the new estimate."""
        self._samples.append((max(received - sent, 0.0), remote - (sent + received) / 2))
        del self._samples[: -self.keep]
        self.offset = min(self._samples)[1]
        return self.offset


# values a worker sends a peer as they are: msgpack carries these, exactly
_SENT_AS_IS = frozenset({bytes, str, int, float, bool, type(None)})

_SKIPPED = object()  # a thread job's outcome when it was cancelled before it began


class _ThreadJob:
    """One task handed to the thread pool: queued, then running or skipped.

    A task cancelled while queued is skipped when a thread reaches it; one
    cancelled while running holds its thread until it returns (see
    ``Worker._held``)."""

    __slots__ = ("_lock", "state")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state = "queued"

    def begin(self) -> bool:
        """In the thread: whether to run (False: it was cancelled meanwhile)."""
        with self._lock:
            if self.state == "skipped":
                return False
            self.state = "running"
            return True

    def cancel(self) -> bool:
        """On the loop: skip it if it has not begun; returns whether it runs."""
        with self._lock:
            if self.state == "queued":
                self.state = "skipped"
            return self.state == "running"



class Worker(Server):
    """A worker: runs tasks in its threads and keeps their results in memory.

    Args:
        scheduler_address: where the scheduler listens, e.g. ``tcp://127.0.0.1:8786``.
        nthreads: threads running plain-function tasks (at most this many at once).
        name: a name shown in logs and ``scheduler_info()``; defaults to the address.
        memory_limit: bytes, reported to the scheduler (0: no limit).
        host: interface to listen on; default: the one that reaches the scheduler.
        port: port to listen on; 0 (the default) picks a free one.
        reconnect_timeout: seconds to keep trying to reach a lost scheduler
            before stopping; default ``worker.reconnect-timeout``.
        heartbeat_interval: seconds between heartbeats; default
            ``worker.heartbeat-interval``.
        security: the :class:`~trioclust.Security` whose worker certificate it
            presents (to the scheduler, its peers and clients) and checks
            theirs against.
        resources: what this worker has of abstract resources, e.g.
            ``{"GPU": 2, "MEM": 10e9}`` (Dask's "Worker Resources"): tasks
            submitted with ``resources={"GPU": 1}`` run only on workers that
            have them, and only while that much is free here. A string
            ``"GPU=2,MEM=10e9"`` is read the same way.
    """

    def __init__(
        self,
        scheduler_address: str,
        *,
        nthreads: int = 1,
        name: str | None = None,
        memory_limit: int = 0,
        host: str | None = None,
        port: int = 0,
        reconnect_timeout: float | None = None,
        heartbeat_interval: float | None = None,
        security: Security | None = None,
        resources: dict[str, float] | str | None = None,
    ) -> None:
        super().__init__()
        if nthreads < 1:
            raise ValueError(f"nthreads must be at least 1, got {nthreads}")
        self.scheduler_address = scheduler_address
        parse_address(scheduler_address)  # a malformed address fails here, clearly
        self.nthreads = nthreads
        self.name = name
        self.memory_limit = int(memory_limit or 0)
        #: what this worker has of each resource (``{"GPU": 2.0}``)
        self.resources = parse_resources(resources)
        self._host = host
        self._port = port
        self.reconnect_timeout = (
            reconnect_timeout
            if reconnect_timeout is not None
            else config.get_float("worker.reconnect-timeout")
        )
        self.security = security
        self.heartbeat_interval = (
            heartbeat_interval
            if heartbeat_interval is not None
            else config.get_float("worker.heartbeat-interval")
        )
        self.inline_limit = config.get_int("worker.inline-result-limit")
        self.id = f"Worker-{uuid.uuid4()}"
        self.address = ""
        self.close_reason: str | None = None
        self._threads = ThreadPool(nthreads, name=f"trioclust-worker-{name or 'worker'}")
        self._process = psutil.Process()
        # memory: see core/memory_policy.py; the store exists while serving
        self._memory_policy = MemoryPolicy(self.memory_limit, memory_thresholds())
        self._monitor_interval = config.get_float("worker.memory.monitor-interval")
        self._store: SpillStore | None = None
        self._memory_poke = trio.Event()  # a big result came in: measure now
        self.paused = False
        # held threads: jobs of thread tasks by key, and those cancelled while running
        self._thread_jobs: dict[Key, _ThreadJob] = {}
        #: the largest recent result's size, fading by a tenth per result:
        #: what a running task is expected to build, which the spill store
        #: leaves room for (rises at once with big results, so the first
        #: ones of a graph are reserved for too)
        self._result_size = 0.0
        self._held: set[_ThreadJob] = set()
        self._held_reported = 0
        self._prefetch = config.get_int("worker.prefetch-per-thread")
        self._prefetch_short = config.get_int("worker.prefetch-short-tasks")
        self._prefetch_duration = config.get_float("worker.prefetch-duration")
        self.state = self._new_state()
        self._generation = 0
        self._inline: dict[Key, Serialized] = {}
        # (start, stop, thread, transfers) of runs whose report has not left yet
        self._timings: dict[Key, tuple[float, float, int, list[list[Any]] | None]] = {}
        # dependency key -> [start, stop, source, nbytes] of its fetch (worker clock)
        self._transfers: dict[Key, list[Any]] = {}
        self.clock = ClockOffset()
        self._cancel_scopes: dict[Key, trio.CancelScope] = {}
        self._scheduler_link: Link | None = None
        self._nursery: trio.Nursery | None = None
        self._pool: ConnectionPool | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        #: the synchronous client this worker's thread tasks share
        #: (``get_client()``), made on first use and closed with the worker
        self.task_client: Any = None
        self._task_client_lock = threading.Lock()
        #: the asynchronous client its coroutine tasks share, likewise
        self.task_client_async: Any = None
        self._task_client_async_lock = trio.Lock()
        self._task_client_async_closed: trio.Event | None = None
        #: the actors held here, by key (see "Actors" below)
        self.actors: dict[Key, Any] = {}
        self._upload_directory: str | None = None  # client.upload_file's files, on sys.path
        #: ``client.restart`` closed this worker: a nanny starts a new one
        self.restart_requested = False
        #: worker plugins by name (``client.register_plugin``)
        self.plugins: dict[str, Any] = {}
        #: the pipe to the nanny running this worker's process, if one does
        #: (set by worker_process; see runtime/nanny_plugins.py)
        self.nanny_pipe: NannyPipe | None = None
        self._actor_calls: ActorCalls  # made once the worker serves

    def _new_state(self) -> WorkerState:
        return WorkerState(
            address=self.address,
            nthreads=self._slots(),
            max_concurrent_gathers=config.get_int("worker.max-concurrent-gathers"),
            transition_log_length=config.get_int("worker.transition-log-length"),
            validate=bool(config.get("worker.validate")),
            data=self._store,
            resources=self.resources,
        )

    def _slots(self) -> int:
        """How many tasks the threads take at once (the core's ``nthreads``).

        One running per thread, and a queue per thread, so that a thread that
        finishes one task starts the next at once instead of waiting for the
        event loop: ``worker.prefetch-per-thread`` tasks, or
        ``worker.prefetch-short-tasks`` while the recent tasks were so short
        that this deeper queue holds less than ``worker.prefetch-duration``
        of work (a task sent later with a better priority then waits for
        little; each queued task is one wake-up of a thread fewer).
        """
        queue = self._prefetch
        mean = self._threads.mean_duration
        if 0 < mean * self._prefetch_short < self._prefetch_duration:
            queue = max(queue, self._prefetch_short)
        # a thread held by a cancelled task takes its one slot, and no queue
        held = len(self._held)
        free = max(0, self.nthreads - held)
        return max(1, held + free * (1 + queue))

    def __repr__(self) -> str:
        return (
            f"<Worker {self.address or '(not started)'!r} name={self.name!r} status={self.status} "
            f"threads={self.nthreads} stored={len(self.state.data)}>"
        )

    @property
    def peak_threads(self) -> int:
        """The most threads its tasks held at once: ``nthreads`` plus the
        seceded ones (``secede()``, ``worker_client``)."""
        return self._threads.peak_threads

    @property
    def data(self) -> MutableMapping[Key, Any]:
        """The results this worker holds, by key (those spilled to disk too)."""
        return self.state.data

    def story(self, *keys: Key) -> list[tuple[Key, str, str, str, float]]:
        """What happened to ``keys`` here since the worker last (re)joined
        its scheduler, oldest first.

        Returns:
            ``(key, start, finish, stimulus_id, time)`` for each transition
            still in the log (the latest ``worker.transition-log-length``).
        """
        return self.state.story(*keys)

    # ------------------------------------------------------------- serving
    async def serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, register, and serve until closed or the scheduler is lost for good."""
        server_label.set(self.name or "Worker")
        process_logs()  # this worker's lines are kept from now on (get-logs)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                comm = await comm_connect(
                    self.scheduler_address, role="worker", name=self.name or "", security=self.security
                )
                try:
                    listener = await nursery.start(
                        partial(comm_serve, role="worker", name=self.name or "", security=self.security),
                        self._listen_address(comm.local_address), self._handle_peer,
                    )
                except BaseException:
                    await comm.aclose()
                    raise
                self.address = listener.contact_address
                server_label.set(self.address)
                self._open_store()
                self.state = self._new_state()
                if self.name is None:
                    self.name = self.address
                self._token = trio.lowlevel.current_trio_token()
                self._threads.start()
                self._pool = ConnectionPool(nursery, role="worker", name=self.name, security=self.security)
                await nursery.start(self._scheduler_sessions, comm)
                nursery.start_soon(self._heartbeat)
                if self.memory_limit:
                    nursery.start_soon(self._monitor_memory)
                self._actor_calls = ActorCalls(str(self.name), self._token, nursery)
                self.status = "running"
                logger.info(
                    "Worker %s at %s registered with %s", self.name, self.address, self.scheduler_address
                )
                task_status.started(self)
                await self._close_requested.wait()
                await self._leave_scheduler()
                closed = self._task_client_async_closed
                if closed is not None:  # it closes on _close_requested, uncancelled
                    with trio.move_on_after(config.get_float("runtime.close-timeout")) as scope:
                        scope.shield = True
                        await closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._shutdown()

    def _listen_address(self, local_address: str) -> str:
        scheme, location = parse_address(local_address)
        if scheme not in _HOST_PORT_SCHEMES:
            return f"{scheme}://"
        host = self._host or parse_host_port(location)[0]
        return f"{scheme}://{unparse_host_port(host, self._port)}"

    async def _scheduler_sessions(self, comm: Any, *, task_status: trio.TaskStatus[None]) -> None:
        """One scheduler link after another: register, serve, reconnect when it breaks.

        Whatever breaks the link or a registration (the scheduler died, a
        reset in the middle of a handshake or of the registration), the
        worker keeps trying until ``reconnect_timeout`` has passed since the
        loss; a restarted scheduler at the same address gets it back."""
        first = True
        while True:
            link = Link(
                comm,
                {
                    "compute-task": self._on_compute_task,
                    "free-keys": self._on_free_keys,
                    "run": self._on_run,
                    "close": self._on_close_request,
                    "acquire-replicas": self._on_acquire_replicas,
                    "get-logs": self._on_get_logs,
                    "profile": self._on_profile,
                    "upload-file": self._on_upload_file,  # client operations
                    "restart": self._on_restart,
                    "plugin-add": self._on_plugin_add,
                    "nanny-plugin-add": self._on_nanny_plugin_add,
                    "plugin-remove": self._on_plugin_remove,
                },
                name=f"worker {self.address} -> scheduler",
            )
            self._scheduler_link = link
            async with trio.open_nursery() as nursery:
                await nursery.start(link.run)
                try:
                    sent = time.time()
                    register: dict[str, Any] = {}
                    if self.resources:
                        register["resources"] = self.resources
                    reply: msgs.RegisterWorkerReply = await link.request(
                        "register-worker", address=self.address, nthreads=self.nthreads,
                        name=self.name, memory_limit=self.memory_limit, metrics=self._metrics(),
                        pid=os.getpid(), stimulus_id=f"register-worker-{sent}", **register,
                    )
                except (OSError, ProtocolError) as exc:  # CommClosedError is an OSError
                    if first:
                        raise
                    logger.warning("Worker %s could not register again: %s", self.name, exc)
                    await link.aclose()
                else:
                    self.clock.add(sent, time.time(), reply["time"])
                    if first:
                        task_status.started()
                        first = False
                    else:
                        logger.info("Worker %s registered again with %s", self.name, self.scheduler_address)
                    if self._held:
                        self._report_held(f"held-{time.time()}")
            if self._close_requested.is_set():
                return
            logger.warning(
                "Worker %s lost its scheduler at %s; trying to reconnect for %g s",
                self.name, self.scheduler_address, self.reconnect_timeout,
            )
            self._reset_state()
            reconnected = await self._reconnect()
            if reconnected is None:
                self._request_close()
                return
            comm = reconnected

    async def _reconnect(self) -> Any | None:
        """A new connection to the scheduler, or None (and ``close_reason``)
        if none completed its handshake within ``reconnect_timeout``.

        Every failure is retried, with a growing pause (at most 1 s):
        refused, reset during the handshake, timeouts."""
        deadline = trio.current_time() + self.reconnect_timeout
        pause = 0.05
        last: BaseException | None = None
        attempts = 0
        while (remaining := deadline - trio.current_time()) > 0:
            attempts += 1
            try:
                return await comm_connect(
                    self.scheduler_address, role="worker", name=self.name or "",
                    timeout=remaining, security=self.security,
                )
            except (OSError, ProtocolError) as exc:
                last = exc
            await trio.sleep(min(pause, max(0.0, deadline - trio.current_time())))
            pause = min(2 * pause, 1.0)
        self.close_reason = (
            f"lost the scheduler at {self.scheduler_address} and could not reconnect "
            f"within {self.reconnect_timeout:g} s (worker.reconnect-timeout; {attempts} attempts"
            f"{', the last: ' + str(last) if last is not None else ''})"
        )
        logger.error("Worker %s stops: %s", self.name, self.close_reason)
        return None

    async def _leave_scheduler(self) -> None:
        link = self._scheduler_link
        if link is None or link.closed:
            return
        unregister: msgs.UnregisterMsg = {"op": "unregister"}
        try:
            link.send(unregister)
        except CommClosedError:
            return
        with trio.move_on_after(config.get_float("runtime.close-timeout")) as scope:
            scope.shield = True
            await link.aclose()

    def _reset_state(self) -> None:
        """Forget everything: the scheduler already rescheduled this worker's work."""
        self._generation += 1
        for scope in self._cancel_scopes.values():
            scope.cancel()
        self._cancel_scopes.clear()
        self._inline.clear()
        self._timings.clear()
        self._transfers.clear()
        for job in self._thread_jobs.values():
            if job.cancel():  # still running: it holds its thread until it returns
                self._held.add(job)
        self._thread_jobs.clear()
        self._held_reported = 0
        if self._store is not None:
            self._store.clear()
        self._memory_policy = MemoryPolicy(self.memory_limit, memory_thresholds())
        self.paused = False
        self.actors.clear()
        self.state = self._new_state()

    async def _shutdown(self) -> None:
        self.status = "closing"
        # first the tasks' client: a task waiting on it gets CancelledError and
        # ends; from now on get_client() in a task raises instead of making one
        with self._task_client_lock:
            client, self.task_client = self.task_client, None
        if client is not None:
            await trio.to_thread.run_sync(client.close)
        await self._threads.aclose(config.get_float("runtime.close-timeout"))
        if hasattr(self, "_actor_calls"):
            await self._actor_calls.aclose(config.get_float("runtime.close-timeout"))
        await self._teardown_plugins()
        self.state.data.clear()
        if self._store is not None:
            self._store.close()
        self.actors.clear()
        self._remove_uploads()
        self.status = "closed"
        self._closed.set()
        logger.info("Worker %s closed", self.name or self.address)

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(self.heartbeat_interval)
            link = self._scheduler_link
            if link is not None and not link.closed:
                sent = time.time()
                try:
                    reply: msgs.HeartbeatReply = await link.request("heartbeat", metrics=self._metrics())
                except (CommClosedError, RemoteError):
                    continue  # the link's end is handled by _scheduler_sessions
                self.clock.add(sent, time.time(), reply["time"])

    def _send_heartbeat(self) -> None:
        """Send the metrics now, one way (a pause or resume wants them known at once)."""
        link = self._scheduler_link
        if link is not None and not link.closed:
            heartbeat: msgs.HeartbeatMsg = {"op": "heartbeat", "metrics": self._metrics()}
            try:
                link.send(heartbeat)
            except CommClosedError:
                pass

    def _metrics(self) -> dict[str, Any]:
        sample = self._memory_sample()
        store = self._store
        try:
            cpu = self._process.cpu_percent()  # since the last call: no waiting
        except psutil.Error:
            cpu = 0.0
        return {
            "cpu": cpu,
            "memory": sample.process,
            "managed": sample.managed,
            "unmanaged": sample.unmanaged,
            "spilled": sample.spilled,
            "spilled_count": store.spilled_count if store is not None else 0,
            "spill_count": store.spill_count if store is not None else 0,
            "unspill_count": store.unspill_count if store is not None else 0,
            "status": "paused" if self.paused else "running",
            "threads_held": len(self._held),
            "executing": len(self.state.executing),
            "stored": len(self.state.data),
            "time": time.time(),
        }

    # -------------------------------------------------------------- memory
    def _open_store(self) -> None:
        """The spill store, when there is a limit to keep to (see runtime/spill.py)."""
        thresholds = self._memory_policy.thresholds
        if self._store is None and self.memory_limit and (thresholds.target or thresholds.spill):
            directory = config.get("worker.memory.spill-directory")
            self._store = SpillStore(self._memory_policy.target_bytes, directory)

    def _memory_sample(self) -> MemorySample:
        try:
            rss = self._process.memory_info().rss
        except psutil.Error:
            rss = 0
        store = self._store
        if store is not None:
            return MemorySample(process=rss, managed=store.memory_bytes, spilled=store.spilled_bytes)
        managed = sum(ts.nbytes for ts in self.state.tasks.values() if ts.state == "memory")
        return MemorySample(process=rss, managed=managed)

    async def _monitor_memory(self) -> None:
        """Measure every ``worker.memory.monitor-interval``, and at once when
        a big result comes in (``_memory_poke``)."""
        while True:
            with trio.move_on_after(self._monitor_interval):
                await self._memory_poke.wait()
            self._check_memory()

    def _check_memory(self) -> None:
        """One turn of the memory monitor (core/memory_policy.py decides)."""
        if self._memory_poke.is_set():
            self._memory_poke = trio.Event()
        spilled_before = self._store.spilled_bytes if self._store is not None else 0
        for _ in range(2):  # after a trim or a spill, measure again at once
            again = False
            sample = self._memory_sample()
            if self._store is not None:
                # room for what the running thread tasks are building
                running = min(len(self._thread_jobs), self.nthreads)
                making = int(running * self._result_size)
                managed_target = self._memory_policy.managed_target(sample, making)
                if managed_target is not None:
                    self._store.target = managed_target
            for action in self._memory_policy.worker_sample(sample):
                if isinstance(action, SpillData):
                    if self._store is not None and self._store.evict(action.nbytes):
                        again = True
                elif isinstance(action, TrimMemory):
                    again = trim_memory() or again
                elif isinstance(action, PauseWorker):
                    self._set_paused(True, action.reason)
                elif isinstance(action, ResumeWorker):
                    self._set_paused(False, "")
            if not again:
                break
        if self._store is not None and self._store.spilled_bytes != spilled_before:
            self._send_heartbeat()  # the scheduler shows spilled bytes without waiting

    def _set_paused(self, paused: bool, reason: str) -> None:
        self.paused = paused
        stim = f"worker-memory-{time.time()}"
        sample = self._memory_sample()
        if paused:
            logger.warning(
                "Worker %s pauses (%s); unmanaged %d bytes, spilled %d bytes",
                self.name, reason, sample.unmanaged, sample.spilled,
            )
        else:
            logger.warning(
                "Worker %s resumes: process memory %d bytes is under worker.memory.pause",
                self.name, sample.process,
            )
        status: msgs.WorkerStatusChangeMsg = {
            "op": "worker-status-change", "status": "paused" if paused else "running",
            "reason": reason, "stimulus_id": stim,
        }
        self._send(status)
        self._handle(ev.PauseChanged(paused=paused, stimulus_id=stim))

    # -------------------------------------------------------- held threads
    def _report_held(self, stimulus_id: str) -> None:
        """Tell the scheduler (and the core's slots) how many threads are held."""
        held = len(self._held)
        if held != self._held_reported:
            self._held_reported = held
            msg: msgs.ThreadsHeldMsg = {"op": "threads-held", "held": held, "stimulus_id": stimulus_id}
            self._send(msg)
        slots = self._slots()
        if slots != self.state.nthreads:
            self._handle(ev.SlotsChanged(slots=slots, stimulus_id=stimulus_id))

    # -------------------------------------------------- scheduler messages
    def _on_compute_task(self, msg: msgs.ComputeTaskMsg) -> None:
        who_has = msg.get("who_has")
        key = msg["key"]
        self._handle(
            ev.ComputeRequested(
                key=key, run_spec=msg["run_spec"],
                who_has={k: tuple(v) for k, v in who_has.items()} if who_has else {},
                nbytes=msg.get("nbytes") or {}, priority=msg["priority"],
                resources=msg.get("resources"), stimulus_id=msg["stimulus_id"],
            )
        )
        if self._held:
            job = self._thread_jobs.get(key)
            ts = self.state.tasks.get(key)
            if job in self._held and ts is not None and ts.state == EXECUTING:
                # asked for again while its thread still runs: its result counts again
                assert job is not None
                self._held.discard(job)
                self._report_held(msg["stimulus_id"])

    def _on_free_keys(self, msg: msgs.FreeKeysMsg) -> None:
        self._handle(ev.FreeRequested(keys=tuple(msg["keys"]), stimulus_id=msg["stimulus_id"]))
        if self.actors:
            for key in msg["keys"]:
                if key not in self.state.data:
                    self.actors.pop(key, None)  # nobody holds its handle any more

    async def _on_run(self, msg: msgs.RunMsg) -> Any:
        """``client.run``: call a function here, in the event loop (like dask)."""
        return await call_function(msg, self, ("dask_worker", "worker"))

    # ------------------------------------------------- peer/client messages
    async def _handle_peer(self, comm: Any) -> None:
        link = Link(
            comm,
            {
                "get-data": self._on_get_data, "update-data": self._on_update_data,
                # actors: calls answered on this link (runtime/actor_calls.py)
                "actor-execute": lambda msg: self._on_actor_execute(link, msg),
                "actor-attribute": lambda msg: self._on_actor_attribute(link, msg),
            },
            name=f"worker {self.address} <- {comm.peer_address}",
        )
        await link.run()

    def _on_get_data(self, msg: msgs.GetDataMsg) -> msgs.GetDataReply:
        data = self.state.data
        # Anything but a plain scalar is pickled whole: the codec would send a
        # container as msgpack with only the objects inside pickled (and the
        # receiver unpickles top-level values only: a dask reduction's
        # {"n": array, ...} chunk), and a subclass of a msgpack type as its
        # base type (a dask shuffle's groups, a dict subclass, would arrive a
        # dict of still-pickled frames)
        found = {
            k: v if type(v) in _SENT_AS_IS else serialize(v)
            for k in msg["keys"] if k in data for v in (data[k],)
        }
        missing = [k for k in msg["keys"] if k not in data]
        return {"data": found, "missing": missing}

    def _on_update_data(self, msg: msgs.ScatterDataMsg) -> msgs.ScatterDataReply:
        values = {
            k: (v.deserialize() if isinstance(v, Serialized) else v) for k, v in msg["data"].items()
        }
        nbytes = {
            k: (v.nbytes if isinstance(v, Serialized) else len(v) if isinstance(v, bytes) else 0)
            for k, v in msg["data"].items()
        }
        self._expect_sizes(nbytes)
        self._handle(ev.DataUpdated(data=values, nbytes=nbytes, stimulus_id=f"update-data-{time.time()}"))
        return {"nbytes": nbytes}

    # ------------------------------------------------------------ the core
    def _handle(self, *events: Any) -> None:
        held = len(self._held)
        if self.plugins:
            log = self.state.transition_log
            mark = log[-1] if log else None
            for instruction in self.state.handle(*events):
                self._dispatch(instruction)
            self._plugin_transitions(mark)
        else:
            for instruction in self.state.handle(*events):
                self._dispatch(instruction)
        if len(self._held) != held:
            self._report_held(events[-1].stimulus_id)

    def _send(
        self,
        msg: Any,
        *,
        urgent: bool = True,
        on_written: Callable[[], object] | None = None,
    ) -> None:
        """Send to the scheduler; ``on_written`` as :meth:`Link.send`'s, at once
        when there is no scheduler to send to."""
        link = self._scheduler_link
        if link is not None and not link.closed:
            try:
                link.send(msg, urgent=urgent, on_written=on_written)
                return
            except CommClosedError:
                pass
        # the scheduler is gone; it reschedules whatever this was about
        if on_written is not None:
            on_written()

    def _dispatch(self, i: Any) -> None:
        if isinstance(i, ins.Execute):
            self._execute(i.key, i.stimulus_id)
        elif isinstance(i, ins.SendTaskFinished):
            msg: msgs.TaskFinishedMsg = {
                "op": "task-finished", "key": i.key, "nbytes": i.nbytes, "type": i.type_name,
                "stimulus_id": i.stimulus_id,
            }
            inline = self._inline.pop(i.key, None)
            if inline is not None:
                msg["value"] = inline
            timing = self._timings.pop(i.key, None)
            if timing is not None:
                self._add_timing(msg, timing)
            self._send(msg, urgent=i.urgent)
        elif isinstance(i, ins.SendTaskErred):
            erred: msgs.TaskErredMsg = {
                "op": "task-erred", "key": i.key, "exception": i.exception,
                "traceback": i.traceback, "exception_text": i.exception_text,
                "stimulus_id": i.stimulus_id,
            }
            timing = self._timings.pop(i.key, None)
            if timing is not None:
                self._add_timing(erred, timing)
            self._send(erred)
        elif isinstance(i, ins.Gather):
            assert self._nursery is not None
            self._nursery.start_soon(self._gather, i.peer, i.keys, self._generation)
        elif isinstance(i, ins.CancelExecute):
            scope = self._cancel_scopes.get(i.key)
            if scope is not None:
                scope.cancel()
            job = self._thread_jobs.get(i.key)
            if job is not None and job.cancel():
                self._held.add(job)  # reported once this pass's instructions are done
        elif isinstance(i, ins.SendMissingData):
            missing: msgs.MissingDataMsg = {
                "op": "missing-data", "key": i.key, "errant_worker": i.errant_worker,
                "stimulus_id": i.stimulus_id,
            }
            self._send(missing)
        elif isinstance(i, ins.SendLongRunning):
            long_running: msgs.LongRunningMsg = {
                "op": "long-running", "key": i.key, "stimulus_id": i.stimulus_id
            }
            self._send(long_running)
        elif isinstance(i, ins.SendReschedule):
            reschedule: msgs.RescheduleMsg = {
                "op": "reschedule", "key": i.key, "stimulus_id": i.stimulus_id
            }
            self._send(reschedule)
        else:  # pragma: no cover - a new instruction type without a dispatcher
            raise TypeError(f"Worker cannot dispatch {i!r}")

    def _add_timing(
        self, msg: msgs.TaskFinishedMsg | msgs.TaskErredMsg,
        timing: tuple[float, float, int, list[list[Any]] | None],
    ) -> None:
        """Put a run's timings into its report, on the scheduler's clock."""
        offset = self.clock.offset
        start, stop, thread, transfers = timing
        msg["start"] = start + offset
        msg["stop"] = stop + offset
        msg["thread"] = thread
        if transfers:
            msg["transfers"] = [[t[0] + offset, t[1] + offset, t[2], t[3]] for t in transfers]

    # ----------------------------------------------------------- execution
    def _execute(self, key: Key, stimulus_id: str) -> None:
        ts = self.state.tasks[key]
        generation = self._generation
        try:
            fn, args, kwargs = loads_task(ts.run_spec)
            if ts.dependencies:
                args = substitute(args, self.state.data)
                kwargs = substitute(kwargs, self.state.data)
        except BaseException as exc:
            self._finish(key, generation, pack_failure(exc, skip_frames=0))
            return
        if isinstance(fn, CreateActor):
            fn = partial(self._create_actor, key, fn.cls)
        transfers = None
        if self._transfers and ts.dependencies:
            pending = self._transfers
            transfers = [pending.pop(d.key) for d in ts.dependencies if d.key in pending]
        if inspect.iscoroutinefunction(fn):
            nursery = self._nursery
            assert nursery is not None

            def start() -> None:
                nursery.start_soon(self._run_coroutine, key, generation, fn, args, kwargs, transfers)

        else:
            limit = self.inline_limit
            context = self._task_context(key, generation, in_thread=True)
            job = _ThreadJob()
            self._thread_jobs[key] = job

            def run() -> Any:
                if not job.begin():
                    return _SKIPPED
                task_context.bind_thread(context)
                try:
                    return _run_timed(fn, args, kwargs, limit)
                finally:
                    task_context.unbind_thread()

            def start() -> None:
                if self._memory_poke.is_set():
                    # a big result came in since the last measure: spill first,
                    # so that this task's memory does not add to it
                    self._check_memory()
                self._threads.submit(
                    run, lambda timed: self._thread_done(key, generation, job, timed, transfers)
                )

        # the code starts once the scheduler can know that it started: a task that
        # kills this worker is then blamed (with any queued behind it in its
        # thread), and not the tasks still waiting here for a thread
        started: msgs.TaskStartedMsg = {"op": "task-started", "key": key, "stimulus_id": stimulus_id}
        self._send(started, on_written=start)

    async def _run_coroutine(
        self, key: Key, generation: int, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
        transfers: list[list[Any]] | None = None,
    ) -> None:
        start = time.time()
        with trio.CancelScope() as scope:
            self._cancel_scopes[key] = scope
            task_context.set_coroutine_task(self._task_context(key, generation, in_thread=False))
            try:
                if self.task_client_async is None and _may_get_client(fn):
                    await self._start_task_client_async()
                value = await fn(*args, **kwargs)
            except Exception as exc:
                outcome: Success | Failure = pack_failure(exc)
            else:
                outcome = pack_success(value, self.inline_limit)
        timed = (start, time.time(), threading.get_ident())
        if self._cancel_scopes.get(key) is scope:
            del self._cancel_scopes[key]
        if scope.cancelled_caught:
            # only CancelExecute cancels this scope: the core drops the outcome
            outcome = pack_failure(RuntimeError(f"task {key!r} was cancelled while running"))
        self._finish(key, generation, outcome, timed, transfers)

    # ------------------------------------------------ tasks that launch tasks
    def _task_context(self, key: Key, generation: int, *, in_thread: bool) -> task_context.TaskContext:
        return task_context.TaskContext(self, key, generation, in_thread)

    def _secede(self, key: Key, generation: int, in_thread: bool) -> bool:
        """``secede()`` in task ``key``: a new thread takes this one's place,
        and the core frees its slot and tells the scheduler. False when the
        task had seceded already (a thread task; a coroutine's second
        secede is the core's no-op)."""
        if in_thread:
            if not self._threads.secede():
                return False
            token = self._token
            assert token is not None
            try:
                token.run_sync_soon(self._seceded, key, generation)
            except trio.RunFinishedError:
                pass
        else:
            self._seceded(key, generation)
        return True

    def _seceded(self, key: Key, generation: int) -> None:
        if generation == self._generation and self.status == "running":
            self._handle(ev.Seceded(key=key, stimulus_id=f"secede-{key}-{time.time()}"))

    def get_task_client(self, timeout: float | None = None) -> Any:
        """The client of the calling task (see ``get_client``): the
        worker's shared synchronous one on a thread, made on first use."""
        context = task_context.current_task()
        if context is not None and not context.in_thread:
            if self.task_client_async is None:
                raise RuntimeError(
                    "get_client() in a coroutine task needs the worker's asynchronous client, which "
                    "the worker starts before running a coroutine function that names get_client "
                    "or worker_client; call get_client() in the task's own function"
                )
            return self.task_client_async
        with self._task_client_lock:
            if self.status != "running":
                raise RuntimeError(f"Worker {self.name} is {self.status}: no client for its tasks")
            if self.task_client is None:
                factory = task_context.sync_client_factory
                if factory is None:  # pragma: no cover - importing trioclust sets it
                    raise RuntimeError("get_client() needs trioclust's client layer imported")
                self.task_client = factory(self, timeout)
            return self.task_client

    async def _start_task_client_async(self) -> None:
        async with self._task_client_async_lock:
            if self.task_client_async is None and task_context.async_client_factory is not None:
                assert self._nursery is not None
                self.task_client_async = await self._nursery.start(self._serve_task_client_async)

    async def _serve_task_client_async(self, *, task_status: trio.TaskStatus[Any]) -> None:
        """Own the coroutine tasks' client: open it here, close it when the worker stops."""
        factory = task_context.async_client_factory
        assert factory is not None
        closed = self._task_client_async_closed = trio.Event()
        try:
            async with factory(self) as client:
                task_status.started(client)
                await self._close_requested.wait()
        finally:
            self.task_client_async = None
            closed.set()

    def _thread_done(
        self, key: Key, generation: int, job: _ThreadJob, timed: Any,
        transfers: list[list[Any]] | None,
    ) -> None:
        if self._thread_jobs.get(key) is job:
            del self._thread_jobs[key]
        if job in self._held:
            self._held.discard(job)
            self._report_held(f"thread-returned-{key}")
        if timed is _SKIPPED:
            ts = self.state.tasks.get(key)
            if generation == self._generation and ts is not None and ts.state == EXECUTING:
                self._execute(key, f"execute-again-{key}")  # asked for again meanwhile
                return
            outcome = pack_failure(RuntimeError(f"task {key!r} was cancelled before it started"))
            self._finish(key, generation, outcome)
            return
        self._finish(key, generation, timed[0], timed[1:], transfers)

    def _finish(
        self, key: Key, generation: int, outcome: Success | Failure,
        timed: tuple[float, float, int] | None = None, transfers: list[list[Any]] | None = None,
    ) -> None:
        if generation != self._generation:
            return  # the state it belonged to was reset
        if timed is not None:
            self._timings[key] = (timed[0], timed[1], timed[2], transfers)
        stim = f"execute-{key}"
        events: list[Any] = []
        slots = self._slots()
        if slots != self.state.nthreads:
            events.append(ev.SlotsChanged(slots=slots, stimulus_id=stim))
        store = self._store
        if isinstance(outcome, Success):
            if store is not None:
                store.expect_size(key, outcome.nbytes)
            if outcome.inline is not None:
                self._inline[key] = outcome.inline
            events.append(
                ev.ExecuteSucceeded(
                    key=key, value=outcome.value, nbytes=outcome.nbytes,
                    type_name=outcome.type_name, stimulus_id=stim,
                )
            )
        else:
            events.append(
                ev.ExecuteFailed(
                    key=key, exception=outcome.exception, traceback=outcome.traceback,
                    exception_text=outcome.text, stimulus_id=stim,
                )
            )
        self._handle(*events)
        self._inline.pop(key, None)  # read while handling ExecuteSucceeded
        self._timings.pop(key, None)  # read while handling either
        if store is not None:
            store.drop_expected(key)  # not stored after all (cancelled meanwhile)
            if isinstance(outcome, Success):
                self._result_size = max(outcome.nbytes, self._result_size * 0.9)
                if outcome.nbytes * 100 >= self.memory_limit:
                    # a big result: measure now rather than at the next tick, as
                    # tasks that make such results quickly outrun the monitor; in
                    # the monitor's task, once the result is referenced by the
                    # store alone (so that spilling it frees its memory)
                    self._memory_poke.set()

    # ------------------------------------------------------------- gathers
    async def _fetch(self, peer: str, keys: list[Key]) -> tuple[dict[Key, Any], list[Key], dict[Key, int]]:
        """Values of ``keys`` from ``peer``: (data, keys it lacked, sizes).

        Raises ``TimeoutError`` (an ``OSError``) if the peer does not answer
        within ``worker.fetch-timeout``, and forgets the connection to it."""
        assert self._pool is not None
        timeout = config.get_float("worker.fetch-timeout")
        with trio.move_on_after(timeout) as waited:
            link = await self._pool.get(peer)
            reply = await link.request("get-data", keys=keys)
        if waited.cancelled_caught:
            self._pool.forget(peer)
            raise TimeoutError(
                f"{peer} did not answer a fetch of {len(keys)} key(s) within {timeout:g} s "
                f"(worker.fetch-timeout)"
            )
        data: dict[Key, Any] = {}
        nbytes: dict[Key, int] = {}
        for k, v in reply["data"].items():
            if isinstance(v, Serialized):
                nbytes[k] = v.nbytes
                v = v.deserialize()
            elif isinstance(v, bytearray | memoryview):
                v = bytes(v)  # a bytes value, sent out of band (see _on_get_data)
            data[k] = v
        return data, list(reply.get("missing") or ()), nbytes

    def _expect_sizes(self, nbytes: dict[Key, int]) -> None:
        store = self._store
        if store is not None:
            for key, n in nbytes.items():
                if n:
                    store.expect_size(key, n)

    async def _gather(self, peer: str, keys: tuple[Key, ...], generation: int) -> None:
        try:
            start = time.time()
            data, _, nbytes = await self._fetch(peer, list(keys))
            self._expect_sizes(nbytes)
            if generation == self._generation:
                self._note_transfers(start, time.time(), peer, nbytes, data)
            event: Any = ev.GatherSucceeded(peer=peer, data=data, stimulus_id=f"gather-{peer}")
        except (OSError, CommClosedError, ProtocolError, RemoteError) as exc:
            logger.warning("Worker %s could not gather %d keys from %s: %s", self.name, len(keys), peer, exc)
            event = ev.GatherFailed(peer=peer, keys=keys, reason=str(exc), stimulus_id=f"gather-failed-{peer}")
        if generation == self._generation:
            self._handle(event)

    def _note_transfers(
        self, start: float, stop: float, peer: str, nbytes: dict[Key, int], data: dict[Key, Any]
    ) -> None:
        """Keep each fetched key's transfer for the task that needed it (see ``_execute``)."""
        pending = self._transfers
        for key, value in data.items():
            size = nbytes.get(key)
            if size is None:  # bytes travel as a frame of their own, unpickled
                size = len(value) if isinstance(value, bytes | bytearray) else 0
            pending[key] = [start, stop, peer, size]
        while len(pending) > _MAX_PENDING_TRANSFERS:  # fetched for tasks that never ran here
            del pending[next(iter(pending))]

    async def _on_acquire_replicas(self, msg: msgs.AcquireReplicasMsg) -> msgs.AcquireReplicasReply:
        """Copy keys from the workers holding them (another worker is retiring)."""
        by_peer: dict[str, list[Key]] = {}
        for key, holders in msg["who_has"].items():
            if holders:
                by_peer.setdefault(holders[0], []).append(key)
        got: list[Key] = []
        for peer, keys in by_peer.items():
            try:
                data, _, nbytes = await self._fetch(peer, keys)
            except (OSError, CommClosedError, ProtocolError, RemoteError) as exc:
                logger.warning("Worker %s could not copy %d keys from %s: %s", self.name, len(keys), peer, exc)
                continue
            self._expect_sizes(nbytes)
            self._handle(ev.DataUpdated(data=data, nbytes=nbytes, stimulus_id=msg["stimulus_id"]))
            got.extend(data)
        return {"keys": got}

    def _on_get_logs(self, msg: msgs.GetWorkerLogsMsg) -> list[tuple[str, str]]:
        """``client.get_worker_logs()``: this worker's recent log lines."""
        return process_logs().recent(server_label.get(), msg.get("n"))

    async def _on_profile(self, msg: msgs.ProfileWorkerMsg) -> dict[str, Any]:
        """``client.profile()``: sample the stacks of this worker's task threads."""
        return await profiling.sample(self._threads.thread_ids, msg["duration"], msg["interval"])

    def _on_close_request(self, msg: msgs.CloseMsg) -> None:
        """The scheduler retires this worker: stop, and say so (a nanny will not restart it)."""
        self.close_reason = msg["reason"] or "the scheduler asked it to close"
        logger.info("Worker %s closes: %s", self.name, self.close_reason)
        self._request_close()

    # -------------------------------------------------------------- actors
    # An actor is an instance made by a task (``CreateActor``) and kept in
    # ``actors`` while the scheduler keeps its key here; the task's result is
    # an ``ActorRef``. Clients call its methods over this worker's port. Each
    # call or attribute read goes into one queue as it arrives (the link's
    # handlers run in the order the messages came) and ``ActorCalls``
    # (runtime/actor_calls.py) runs them one at a time, plain methods in a
    # thread of their own as Dask's single actor thread does, coroutine
    # methods on this event loop.

    def _create_actor(self, key: Key, cls: type, *args: Any, **kwargs: Any) -> ActorRef:
        """On a task thread: make the instance and keep it; the task's result is its reference."""
        instance = cls(*args, **kwargs)
        self.actors[key] = instance
        return ActorRef(key=key, address=self.address, cls=cls)

    def _actor(self, key: Key) -> Any:
        try:
            return self.actors[key]
        except KeyError:
            raise ValueError(
                f"Worker {self.address} holds no actor {key!r}: it was released, or this "
                f"worker restarted since it was made (actors are not recovered)"
            ) from None

    def _on_actor_execute(self, link: Link, msg: msgs.ActorExecuteMsg) -> None:
        try:
            method = getattr(self._actor(msg["key"]), msg["method"])
            args: Any = msg["args"]
            kwargs: Any = msg["kwargs"]
            if isinstance(args, Serialized):
                args = args.deserialize()
            if isinstance(kwargs, Serialized):
                kwargs = kwargs.deserialize()
        except Exception as exc:
            link.send(error_reply(msg["call"], exc))
            return
        call = partial(method, *(args or ()), **(kwargs or {}))
        self._actor_calls.submit(link, msg["call"], call, inspect.iscoroutinefunction(method))

    def _on_actor_attribute(self, link: Link, msg: msgs.ActorAttributeMsg) -> None:
        try:
            instance = self._actor(msg["key"])
        except ValueError as exc:
            link.send(error_reply(msg["call"], exc))
            return
        self._actor_calls.submit(link, msg["call"], partial(getattr, instance, msg["attribute"]), False)

    # --------------------------------------------------- client operations
    def _on_upload_file(self, msg: msgs.UploadFileWorkerMsg) -> None:
        """``client.upload_file``: keep the file on the import path; import it when asked.

        A ``.py`` file goes into a directory of this worker's own at the front of
        ``sys.path``; a ``.zip`` or ``.egg`` goes there too and is put on the
        path itself. Loading imports the module (the archive's top-level
        modules and packages), reloading one imported before.
        """
        directory = self._upload_directory
        if directory is None:
            directory = self._upload_directory = tempfile.mkdtemp(prefix="trioclust-uploads-")
            sys.path.insert(0, directory)
        name = os.path.basename(msg["filename"])
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(msg["data"])
        modules: list[str] = []
        if name.endswith((".zip", ".egg")):
            if path not in sys.path:
                sys.path.insert(0, path)
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    top, _, rest = member.partition("/")
                    if (rest == "__init__.py" or (not rest and top.endswith(".py"))) and top != "EGG-INFO":
                        modules.append(top.removesuffix(".py"))
        elif name.endswith(".py"):
            modules.append(name.removesuffix(".py"))
        importlib.invalidate_caches()
        if msg["load"]:
            for module in dict.fromkeys(modules):
                if module in sys.modules:
                    importlib.reload(sys.modules[module])
                else:
                    importlib.import_module(module)
        logger.info("Worker %s got the uploaded file %s", self.name, name)

    def _on_restart(self, msg: msgs.RestartWorkerMsg) -> None:
        """``client.restart``: stop; under a nanny the process exits so that a
        fresh worker starts (a worker without one stays closed, as in Dask)."""
        self.restart_requested = True
        self.close_reason = "restarted by client.restart()"
        logger.info("Worker %s restarts (client.restart)", self.name)
        self._request_close()

    def _on_plugin_add(self, msg: msgs.PluginAddMsg) -> Any:
        """``client.register_plugin(WorkerPlugin)``: set it up (tearing down
        the one it replaces); ``setup`` may be async, and its error is the
        registering client's."""
        plugin = msg["plugin"].deserialize() if isinstance(msg["plugin"], Serialized) else msg["plugin"]
        old = self.plugins.pop(msg["name"], None)
        if old is not None and hasattr(old, "teardown"):
            _call_logged(old.teardown, self, f"worker plugin {msg['name']!r} teardown")
        self.plugins[msg["name"]] = plugin
        setup = getattr(plugin, "setup", None)
        return setup(worker=self) if setup is not None else None

    async def _on_nanny_plugin_add(self, msg: msgs.NannyPluginAddMsg) -> dict[str, Any] | None:
        """Pass a ``NannyPlugin`` on to this worker's nanny; ``None`` without one."""
        if self.nanny_pipe is None:
            return None
        answer = await self.nanny_pipe.request(msg["name"], msg["plugin"])
        if answer["restart"] and "id" not in msg:
            # given as this worker registered: nobody waits for an answer
            self._on_restart({"op": "restart"})
        return {"status": answer["error"] or "OK", "restart": answer["restart"]}

    async def _on_plugin_remove(self, msg: msgs.PluginRemoveMsg) -> str | None:
        """``client.unregister_worker_plugin``: tear the plugin down here (or in the nanny)."""
        name = msg["name"]
        if msg["nanny"]:
            if self.nanny_pipe is None:
                return None
            answer = await self.nanny_pipe.request(name, None)
            return str(answer["error"] or "OK")
        plugin = self.plugins.pop(name, None)
        teardown = getattr(plugin, "teardown", None)
        if teardown is not None:
            try:
                result = teardown(worker=self)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"
        return "OK"

    def _plugin_transitions(self, mark: Any) -> None:
        log = self.state.transition_log
        new = []
        for entry in reversed(log):
            if entry is mark:
                break
            new.append(entry)
        for key, start, finish, stimulus_id, _ in reversed(new):
            for name, plugin in list(self.plugins.items()):
                hook = getattr(plugin, "transition", None)
                if hook is not None:
                    _call_logged(
                        partial(hook, key, start, finish, stimulus_id=stimulus_id),
                        None, f"worker plugin {name!r} transition",
                    )

    async def _teardown_plugins(self) -> None:
        for name, plugin in list(self.plugins.items()):
            teardown = getattr(plugin, "teardown", None)
            if teardown is None:
                continue
            try:
                result = teardown(worker=self)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("Worker plugin %r failed in teardown", name)
        self.plugins.clear()

    def _remove_uploads(self) -> None:
        directory, self._upload_directory = self._upload_directory, None
        if directory is None:
            return
        sys.path[:] = [p for p in sys.path if not (p == directory or p.startswith(directory + os.sep))]
        shutil.rmtree(directory, ignore_errors=True)


def _call_logged(fn: Callable[..., Any], arg: Any, what: str) -> None:
    """``fn(arg)`` (``fn()`` when ``arg`` is None), logging its error."""
    try:
        fn() if arg is None else fn(arg)
    except Exception:
        logger.exception("%s failed", what)


def _run_timed(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], inline_limit: int
) -> tuple[Success | Failure, float, float, int]:
    """On a worker thread: run the task, and say when and on which thread."""
    start = time.time()
    outcome = run_sync(fn, args, kwargs, inline_limit)
    return outcome, start, time.time(), threading.get_ident()

_CLIENT_NAMES = frozenset({"get_client", "worker_client"})


_names_client: dict[Any, bool] = {}  # by code object; bounded below


def _may_get_client(fn: Any) -> bool:
    """Whether coroutine function ``fn``'s code (nested functions included)
    names ``get_client`` or ``worker_client``: then the worker starts its
    asynchronous client for it before it runs (see ``get_task_client``)."""
    top = getattr(fn, "__code__", None)
    if top is None:
        return False
    known = _names_client.get(top)
    if known is not None:
        return known
    found = False
    codes = [top]
    while codes and not found:
        code = codes.pop()
        found = not _CLIENT_NAMES.isdisjoint(code.co_names)
        codes.extend(c for c in code.co_consts if hasattr(c, "co_names"))
    if len(_names_client) > 1024:
        _names_client.clear()
    _names_client[top] = found
    return found


# ------------------------------------------------------------ in a task


def get_worker() -> Worker:
    """The worker running the calling task (``dask.distributed.get_worker``).

    Raises:
        ValueError: outside of a task.
    """
    context = task_context.current_task()
    if context is None:
        raise ValueError("No worker found: get_worker() works only inside a task running on a worker")
    worker: Worker = context.worker
    return worker


def secede() -> None:
    """Have the calling task leave its worker's thread pool (``dask.distributed.secede``).

    A task that waits on tasks it launched should secede first: a new
    thread takes its place, and the scheduler stops counting it against the
    worker's threads, so the tasks it waits for can run. Does nothing
    outside of a task, or when the task seceded already.
    """
    context = task_context.current_task()
    if context is not None:
        context.secede()


def rejoin() -> None:
    """Have a seceded task take a place in its worker's thread pool again
    (``dask.distributed.rejoin``), waiting until one is free."""
    context = task_context.current_task()
    if context is not None:
        context.rejoin()
