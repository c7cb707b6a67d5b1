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

Peers and clients connect to the worker's own listener for ``get-data`` and
``update-data`` (scatter). If the scheduler link breaks, the worker drops all
its state (the scheduler has already rescheduled its work) and keeps trying
to reconnect for ``reconnect_timeout`` seconds; then it stops, with
``close_reason`` saying why.

The Worker's methods are grouped by concept in mixins, each in a module of
its own under runtime/: ``worker_execution.py`` (running ``Execute``, threads
held by cancelled tasks, task timings), ``worker_task_clients.py`` (tasks'
contexts, ``secede``, ``get_client``), ``worker_memory.py`` (the spill store
and the memory monitor), ``worker_transfers.py`` (``get-data``,
``update-data``, fetches from peers), ``worker_actors.py`` (actors) and
``worker_plugins.py`` (plugins, uploaded files, restart). This module keeps
the serving: connecting, registering, reconnecting, heartbeats, closing, and
the core's events and instructions.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any

import psutil
import trio

from trioclust import config, task_context
from trioclust.comm import Link
from trioclust.comm import connect as comm_connect
from trioclust.comm import serve as comm_serve
from trioclust.comm.pool import ConnectionPool
from trioclust.core import events as ev
from trioclust.core import instructions as ins
from trioclust.core.keys import Key
from trioclust.core.memory_policy import (
    MemoryPolicy,
)
from trioclust.core.worker_state import WorkerState
from trioclust.core.worker_tasks import EXECUTING
from trioclust.errors import CommClosedError, ProtocolError, RemoteError
from trioclust.protocol import Serialized
from trioclust.protocol import messages as msgs
from trioclust.runtime import profiling
from trioclust.runtime.actor_calls import ActorCalls
from trioclust.runtime.execution import (
    call_function,
)
from trioclust.runtime.log_capture import process_logs, server_label
from trioclust.runtime.nanny_plugins import NannyPipe
from trioclust.runtime.resources import parse_resources
from trioclust.runtime.server import Server
from trioclust.runtime.spill import SpillStore, memory_thresholds
from trioclust.runtime.thread_pool import ThreadPool
from trioclust.runtime.worker_actors import ActorHosting
from trioclust.runtime.worker_execution import ClockOffset, TaskExecution, _ThreadJob
from trioclust.runtime.worker_memory import MemoryManagement
from trioclust.runtime.worker_plugins import PluginHosting
from trioclust.runtime.worker_task_clients import TaskClients
from trioclust.runtime.worker_transfers import DataTransfers, Unloadable
from trioclust.transport.addresses import parse_address, parse_host_port, unparse_host_port

if TYPE_CHECKING:
    from trioclust.security import Security

# schemes whose listen address is host:port (the rest, inproc, pick a name)
_HOST_PORT_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")

logger = logging.getLogger("trioclust.worker")


class Worker(
    TaskExecution, TaskClients, MemoryManagement, DataTransfers, ActorHosting, PluginHosting, Server
):
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
        #: fetched keys stored as an Unloadable (runtime/worker_transfers.py)
        self._unloadable: dict[Key, Unloadable] = {}
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
        self._unloadable.clear()
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
