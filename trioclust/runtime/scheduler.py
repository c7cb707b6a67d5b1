"""The Scheduler server: a thin trio shell around :class:`SchedulerState`.

Theory of operation
-------------------
The scheduler listens on one address. Every connection starts with the comm
handshake, whose ``role`` says who is calling:

* ``worker``: a worker's long-lived link. Its first request registers the
  worker; after that the link carries task results one way and
  ``compute-task`` / ``free-keys`` the other. When the link ends the worker is
  removed (unexpectedly, unless it said ``unregister`` first).
* ``client``: a client's long-lived link: graph updates and releases in,
  ``keys-in-memory`` / ``task-erred`` / ``lost-data`` out, plus requests
  (``scheduler-info``, ``who-has``, ``run-on-scheduler``, ``broadcast``).

Each connection's reader turns every message (declared in
``protocol/messages.py``) into a core event, handled by the
``_worker_*`` / ``_client_*`` method for its op; ``_handle`` feeds events to
``SchedulerState.handle`` and turns each instruction into a non-blocking
``Link.send`` to the worker or client it names, urgent or not as the
instruction says. Nothing on that path awaits or starts a task: the links'
writers coalesce whatever piles up behind a write in flight into one batch.
Workers' task reports (``task-started``, ``task-finished``) go to the core's
``report``, which keeps them for one pass of the state machine when the
round's reads are done (``_report_passes``, woken by the first worker batch
read in a round) and tells the round's first result to its waiting clients at
once (see "Task reports and results told early" in core/scheduler_state.py).
Retiring workers is a core decision too; the runtime only carries out the
copies it asks for (``_acquire_replicas``) and reports how they went.

This module holds the serving, the links, the dispatch of the core's
instructions and the handler tables; the handlers are the methods of mixins,
one module each: runtime/scheduler_workers.py (what workers send, worker
membership), runtime/scheduler_clients.py (a client's graph and questions),
runtime/scheduler_admin.py (retiring, replicas, restart, running functions),
runtime/scheduler_plugins.py (plugins, uploaded files) and
runtime/scheduler_coordination.py (variables, queues, locks, ...).
"""

from __future__ import annotations

import logging
import os
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from trioclust import config
from trioclust.comm import Link
from trioclust.comm import serve as comm_serve
from trioclust.core import events as ev
from trioclust.core import instructions as ins
from trioclust.core.keys import Key
from trioclust.core.scheduler_state import SchedulerState
from trioclust.dashboard.task_stream import TaskStream
from trioclust.errors import CommClosedError
from trioclust.protocol import messages as msgs
from trioclust.runtime.log_capture import process_logs, server_label
from trioclust.runtime.scheduler_admin import AdminHandlers
from trioclust.runtime.scheduler_clients import ClientHandlers
from trioclust.runtime.scheduler_coordination import FIRE_AND_FORGET, CoordinationHandlers
from trioclust.runtime.scheduler_plugins import PluginHandlers
from trioclust.runtime.scheduler_workers import WorkerHandlers, _WorkerPeer
from trioclust.runtime.server import Server
from trioclust.transport.addresses import parse_address, unparse_host_port

if TYPE_CHECKING:
    from trioclust.security import Security
    from trioclust.transport import ConnectionHandler

logger = logging.getLogger("trioclust.scheduler")


class Scheduler(
    WorkerHandlers, ClientHandlers, AdminHandlers, PluginHandlers, CoordinationHandlers, Server
):
    """The scheduler: owns the task graph and tells workers what to run.

    Args:
        host: interface to listen on (default ``127.0.0.1``: nothing listens on
            outside interfaces unless asked).
        port: port to listen on; 0 (the default) picks a free one.
        protocol: transport scheme: ``"tcp"`` by default, ``"tls"`` with a
            ``security`` (``"ws"``, ``"wss"``, ``"inproc"``...).
        address: a full listen address instead of host/port/protocol.
        allowed_failures: worker deaths during one task before it errs with
            ``KilledWorker``; default from ``scheduler.allowed-failures``.
        worker_ttl: seconds without a heartbeat after which a worker is
            removed; default from ``scheduler.worker-ttl``.
        dashboard_address: where to serve the dashboard (``":8787"``: port
            8787 on the scheduler's host); None (the default) for none. A
            taken port falls back to a free one, with a warning;
            ``dashboard_link`` is the page that really serves. A scheduler
            speaking ``ws://`` accepts comms on the dashboard's port too, at
            ``ws://HOST:PORT/trioclust-comm``; one speaking ``wss://`` serves
            the dashboard over HTTPS with its own certificate, requires the
            cluster's CA of every peer there too (browsers included), and
            accepts comms at ``wss://HOST:PORT/trioclust-comm``.
        security: the :class:`~trioclust.Security` whose certificates the
            scheduler presents and checks its peers' against.

    Use ``async with Scheduler() as s:`` (under trio or asyncio) or
    ``await nursery.start(s.serve)``; ``s.address`` is the contact address.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        protocol: str | None = None,
        address: str | None = None,
        allowed_failures: int | None = None,
        worker_ttl: float | None = None,
        dashboard_address: str | None = None,
        security: Security | None = None,
    ) -> None:
        super().__init__()
        self.id = f"Scheduler-{uuid.uuid4()}"
        self.security = security
        if protocol is None:
            protocol = security.default_protocol if security is not None else "tcp"
        if address is None:
            location = "" if protocol == "inproc" else unparse_host_port(host, port)
            address = f"{protocol}://{location}"
        self._listen_address = address
        self.address = ""
        self.state = SchedulerState(
            allowed_failures=(
                allowed_failures
                if allowed_failures is not None
                else config.get_int("scheduler.allowed-failures")
            ),
            worker_saturation=config.get_float("scheduler.worker-saturation"),
            root_saturation=config.get_float("scheduler.root-saturation"),
            root_memory_fraction=config.get_float("scheduler.root-memory-fraction"),
            transition_log_length=config.get_int("scheduler.transition-log-length"),
            validate=bool(config.get("scheduler.validate")),
            work_stealing=bool(config.get("scheduler.work-stealing")),
            stranded_after=config.get_float("scheduler.work-stealing-interval"),
        )
        self.worker_ttl = (
            worker_ttl if worker_ttl is not None else config.get_float("scheduler.worker-ttl")
        )
        self.worker_links: dict[str, Link] = {}
        self.client_links: dict[str, Link] = {}
        self.worker_metrics: dict[str, dict[str, Any]] = {}
        self._last_seen: dict[str, float] = {}
        self._leaving: set[str] = set()
        self._workers_changed = trio.Event()
        # the core keeps workers' task reports for one pass per round of the
        # event loop: the first batch of a round wakes _report_passes
        self._reports_due = trio.Event()
        self._pass_queued = False
        self._started = time.time()
        self.task_stream = TaskStream()
        #: ``(time, worker, cpu percent, memory bytes)`` per heartbeat, the newest
        #: ``dashboard.worker-history-length`` (performance reports, the dashboard)
        self.worker_history: deque[tuple[float, str, float, int]] = deque(
            maxlen=config.get_int("dashboard.worker-history-length")
        )
        self.dashboard_link: str | None = None
        self._dashboard_address = dashboard_address
        self._init_coordination()
        #: files from ``client.upload_file``, by name, sent to every worker that joins
        self.uploads: dict[str, msgs.UploadFileWorkerMsg] = {}
        #: scheduler plugins by name (``client.register_plugin``)
        self.plugins: dict[str, Any] = {}
        #: worker plugins by name, sent to every worker that joins
        self.worker_plugins: dict[str, msgs.PluginAddMsg] = {}
        #: nanny plugins by name, sent through every worker that joins to its nanny
        self.nanny_plugins: dict[str, msgs.NannyPluginAddMsg] = {}
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return (
            f"<Scheduler {self.address or self._listen_address!r} status={self.status} "
            f"workers={len(self.state.workers)} tasks={len(self.state.tasks)}>"
        )

    def story(self, *keys: Key) -> list[tuple[Key, str, str, str, float]]:
        """What happened to ``keys`` here, oldest first.

        Returns:
            ``(key, start, finish, stimulus_id, time)`` for each transition
            still in the log (the latest ``scheduler.transition-log-length``).
        """
        return self.state.story(*keys)

    # ------------------------------------------------------------- serving
    async def serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until :meth:`close` is called (or cancelled)."""
        server_label.set("Scheduler")
        process_logs()  # the scheduler's lines are kept from now on (get-logs)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                listener = await nursery.start(
                    partial(comm_serve, role="scheduler", name=self.id, security=self.security),
                    self._listen_address, self._handle_comm,
                )
                self.address = listener.contact_address
                if self._dashboard_address is not None:
                    # the web libraries take a while to import: only when asked
                    from trioclust.dashboard import serve_dashboard

                    link = await nursery.start(
                        partial(
                            serve_dashboard,
                            comm_handler=self._dashboard_comm_handler(),
                            ssl_context=self._dashboard_ssl_context(),
                        ),
                        self, self._dashboard_address,
                    )
                    self.dashboard_link = f"{link}/status"
                nursery.start_soon(self._check_worker_ttl)
                nursery.start_soon(self._report_passes)
                nursery.start_soon(self._steal_looks)
                self.status = "running"
                logger.info("Scheduler at: %s", self.address)
                task_status.started(self)
                await self._close_requested.wait()
                await self._close_plugins()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self.status = "closed"
            self._closed.set()
            logger.info("Scheduler %s closed", self.address or self._listen_address)

    # ------------------------------------- websocket comms on the dashboard port
    def _dashboard_comm_handler(self) -> ConnectionHandler | None:
        """What the dashboard's websocket route hands its streams to, or None.

        Only a scheduler that speaks websockets takes comms there. A ``wss://``
        one serves its dashboard over HTTPS with its own TLS context (see
        :meth:`_dashboard_ssl_context`), so every peer of that port has shown a
        certificate of the cluster's CA, as on the scheduler's port. A
        ``tcp://`` or ``tls://`` scheduler's dashboard stays read-only: plain
        HTTP without client certificates must not become a door around
        authentication, nor a page's port a way to send pickles.
        """
        if parse_address(self.address)[0] not in ("ws", "wss"):
            return None
        from trioclust.comm import handle_stream

        return partial(handle_stream, handler=self._handle_comm, role="scheduler", name=self.id)

    def _dashboard_ssl_context(self) -> ssl.SSLContext | None:
        """The dashboard's TLS context: the scheduler's own when it speaks ``wss://``."""
        if parse_address(self.address)[0] != "wss" or self.security is None:
            return None
        return self.security.server_context("scheduler")

    async def _handle_comm(self, comm: Any) -> None:
        role = comm.peer_info.get("role")
        if role == "worker":
            await self._serve_worker(comm)
        elif role == "client":
            await self._serve_client(comm)
        else:
            logger.warning("Refusing connection from %s with unknown role %r", comm.peer_address, role)
            await comm.aclose()

    # ------------------------------------------------------------- workers
    async def _serve_worker(self, comm: Any) -> None:
        """A worker's link: each message becomes a core event (see ``_worker_*``)."""
        peer = _WorkerPeer()
        handlers = {op: partial(handler, self, peer) for op, handler in _WORKER_HANDLERS.items()}
        link = peer.link = Link(
            comm, handlers, name=f"scheduler->worker {comm.peer_address}",
            on_batch=self._reports_received,
        )
        try:
            await link.run()
        finally:
            address = peer.address
            if address is not None and self.worker_links.get(address) is link:
                expected = address in self._leaving or self.status != "running"
                self._remove_worker(address, "worker closed" if expected else "connection lost", expected)

    # ------------------------------------------------------------- clients
    async def _serve_client(self, comm: Any) -> None:
        """A client's link: each message becomes a core event or a query (``_client_*``)."""
        client = f"{comm.peer_info.get('name') or 'client'}-{uuid.uuid4().hex[:8]}"
        handlers = {op: partial(handler, self, client) for op, handler in _CLIENT_HANDLERS.items()}
        link = Link(comm, handlers, name=f"scheduler->client {comm.peer_address}")
        self.client_links[client] = link
        self._handle(ev.AddClient(client=client, stimulus_id=f"{client}-connected"))
        if self.plugins:
            self._plugins_call("add_client", scheduler=self, client=client)
        try:
            await link.run()
        finally:
            self.client_links.pop(client, None)
            self._coordination_client_gone(client)  # its leases and locks go with it
            self._handle(ev.RemoveClient(client=client, stimulus_id=f"{client}-gone"))
            if self.plugins:
                self._plugins_call("remove_client", scheduler=self, client=client)

    # ------------------------------------------------------------ the core
    def _handle(self, *events: Any, moves: list[ins.AcquireReplicas] | None = None) -> None:
        """Feed events to the core (after the task reports it keeps, see its
        notes) and carry out its instructions; ``moves`` collects the
        AcquireReplicas ones, which the caller runs (:meth:`retire_workers`)."""
        log = self.state.transition_log
        mark = log[-1] if self.plugins and log else None
        instructions = self.state.handle(*events)
        self.task_stream.observe(events, instructions)
        self._dispatch_all(instructions, moves)
        if self.plugins:
            self._plugin_transitions(mark)

    def _dispatch_all(
        self, instructions: list[Any], moves: list[ins.AcquireReplicas] | None = None
    ) -> None:
        # Messages of this pass that more of their kind may join: free-keys to
        # a worker, keys-in-memory to a client. A message joins the open one
        # for its peer while nothing else went to that peer in between (the
        # order per peer stays as the instructions say); none is written
        # before this synchronous pass ends.
        joining: dict[tuple[str, str, bool], Any] = {}
        for instruction in instructions:
            try:
                self._dispatch(instruction, joining, moves)
            except CommClosedError:
                # the peer is going away; its link's end removes it properly
                pass
        self._release_forgotten()  # fire-and-forget keys done in this pass

    def _dispatch(
        self, i: Any, joining: dict[tuple[str, str, bool], Any], moves: list[ins.AcquireReplicas] | None
    ) -> None:
        kind = type(i)
        if kind is ins.KeyInMemory:
            self._send_in_memory(i, joining)
        elif kind is ins.FreeKeys:
            free: msgs.FreeKeysMsg | None = joining.get(("free", i.worker, i.cancel))
            if free is None:
                link = self.worker_links.get(i.worker)
                if link is None:
                    return
                free = {"op": "free-keys", "keys": [], "stimulus_id": i.stimulus_id}
                link.send(free, lazy=i.lazy)
                joining[("free", i.worker, i.cancel)] = free
            free["keys"].extend(i.keys)
        elif kind is ins.ComputeTask:
            joining.pop(("free", i.worker, True), None)
            joining.pop(("free", i.worker, False), None)
            link = self.worker_links.get(i.worker)
            if link is not None:
                task: msgs.ComputeTaskMsg = {
                    "op": "compute-task", "key": i.key, "run_spec": i.run_spec,
                    "priority": i.priority, "stimulus_id": i.stimulus_id,
                }
                if i.who_has:  # the worker reads a missing one as none
                    task["who_has"] = {k: list(v) for k, v in i.who_has.items()}
                    task["nbytes"] = dict(i.nbytes)
                if i.resources:
                    task["resources"] = dict(i.resources)
                link.send(task, urgent=i.urgent)
        elif kind is ins.KeyErred:
            if i.client == FIRE_AND_FORGET:
                self._forget_done(i.key)
                return
            joining.pop(("memory", i.client, False), None)
            client_link = self.client_links.get(i.client)
            if client_link is not None:
                erred: msgs.KeyErredMsg = {
                    "op": "task-erred", "key": i.key, "exception": i.exception,
                    "traceback": i.traceback, "exception_text": i.exception_text,
                    "stimulus_id": i.stimulus_id,
                }
                client_link.send(erred)
        elif kind is ins.KeyLost:
            joining.pop(("memory", i.client, False), None)
            client_link = self.client_links.get(i.client)
            if client_link is not None:
                lost: msgs.LostDataMsg = {"op": "lost-data", "key": i.key, "stimulus_id": i.stimulus_id}
                client_link.send(lost)
        elif kind is ins.AcquireReplicas:
            if moves is None:  # pragma: no cover - only these events lead to them
                raise RuntimeError(f"AcquireReplicas outside retire/replicate/rebalance: {i!r}")
            moves.append(i)
        elif kind is ins.CloseWorker:
            link = self.worker_links.get(i.worker)
            if link is not None and not link.closed:
                self._leaving.add(i.worker)
                logger.info("Retiring worker %s", i.worker)
                close: msgs.CloseMsg = {"op": "close", "reason": i.reason}
                link.send(close)
        else:  # pragma: no cover - a new instruction type without a dispatcher
            raise TypeError(f"Scheduler cannot dispatch {i!r}")

    def _send_in_memory(self, i: ins.KeyInMemory, joining: dict[tuple[str, str, bool], Any]) -> None:
        """Add ``i`` to the open keys-in-memory for its client (see ``_dispatch_all``),
        or send a new one."""
        msg: msgs.KeysInMemoryMsg | None = joining.get(("memory", i.client, False))
        if msg is None:
            if i.client == FIRE_AND_FORGET:
                self._forget_done(i.key)
                return
            client_link = self.client_links.get(i.client)
            if client_link is None:
                return
            msg = {"op": "keys-in-memory", "keys": [], "types": [], "stimulus_id": i.stimulus_id}
            client_link.send(msg, urgent=i.urgent)
            joining[("memory", i.client, False)] = msg
        msg["keys"].append(i.key)
        msg["types"].append(i.type_name)
        if i.value is not None:
            msg.setdefault("values", {})[i.key] = i.value

    # ---------------------------------------------------------- inspection
    def identity(self) -> dict[str, Any]:
        """What ``client.scheduler_info()`` returns."""
        workers = {}
        for address, w in self.state.workers.items():
            workers[address] = {
                "name": w.name,
                "nthreads": w.nthreads,
                "memory_limit": w.memory_limit,
                "processing": len(w.processing),
                "stored": len(w.has_what),
                "nbytes": w.nbytes_stored,
                "status": "paused" if w.paused else "running",
                "threads_held": w.held,
                "resources": dict(w.resources),
                "metrics": self.worker_metrics.get(address, {}),
            }
        return {
            "type": "Scheduler",
            "id": self.id,
            "address": self.address,
            "pid": os.getpid(),
            "started": self._started,
            "workers": workers,
            "tasks": self.state.tasks_by_state(),
            "no_worker": self.state.unrunnable(),
            "clients": len(self.client_links),
        }


#: The handler of each op a worker sends, by op (see protocol/messages.py).
_WORKER_HANDLERS: dict[str, Callable[..., Any]] = {
    "register-worker": Scheduler._worker_register,
    "task-finished": Scheduler._worker_task_finished,
    "task-started": Scheduler._worker_task_started,
    "task-erred": Scheduler._worker_task_erred,
    "missing-data": Scheduler._worker_missing_data,
    "reschedule": Scheduler._worker_reschedule,
    "heartbeat": Scheduler._worker_heartbeat,
    "unregister": Scheduler._worker_unregister,
    # tasks that launch tasks
    "long-running": Scheduler._worker_long_running,
    # worker memory and held threads
    "worker-status-change": Scheduler._worker_status_change,
    "threads-held": Scheduler._worker_threads_held,
}

#: The handler of each op a client sends, by op.
_CLIENT_HANDLERS: dict[str, Callable[..., Any]] = {
    "update-graph": Scheduler._client_update_graph,
    "release-keys": Scheduler._client_release_keys,
    "update-data": Scheduler._client_update_data,
    "who-has": Scheduler._client_who_has,
    "scheduler-info": Scheduler._client_scheduler_info,
    "run-on-scheduler": Scheduler._client_run_on_scheduler,
    "broadcast": Scheduler._client_broadcast,
    "client-id": Scheduler._client_id,
    "wait-for-workers": Scheduler._client_wait_for_workers,
    "retire-workers": Scheduler._client_retire_workers,
    # cluster managers (deploy/)
    "adaptive-workload": Scheduler._client_adaptive_workload,
    # client operations
    "get-who-has": Scheduler._client_get_who_has,
    "has-what": Scheduler._client_has_what,
    "nthreads": Scheduler._client_nthreads,
    "upload-file": Scheduler._client_upload_file,
    "replicate": Scheduler._client_replicate,
    "rebalance": Scheduler._client_rebalance,
    "restart": Scheduler._client_restart,
    "register-scheduler-plugin": Scheduler._client_register_scheduler_plugin,
    "register-worker-plugin": Scheduler._client_register_worker_plugin,
    # nanny plugins, unregistering plugins
    "register-nanny-plugin": Scheduler._client_register_nanny_plugin,
    "unregister-worker-plugin": Scheduler._client_unregister_worker_plugin,
    # diagnostics
    "get-task-stream": Scheduler._client_get_task_stream,
    "get-worker-history": Scheduler._client_get_worker_history,
    "get-logs": Scheduler._client_get_logs,
    "profile": Scheduler._client_profile,
    # coordination (runtime/scheduler_coordination.py)
    "variable-set": Scheduler._client_variable_set,
    "variable-get": Scheduler._client_variable_get,
    "variable-delete": Scheduler._client_variable_delete,
    "queue-put": Scheduler._client_queue_put,
    "queue-get": Scheduler._client_queue_get,
    "queue-size": Scheduler._client_queue_size,
    "semaphore-create": Scheduler._client_semaphore_create,
    "semaphore-acquire": Scheduler._client_semaphore_acquire,
    "semaphore-release": Scheduler._client_semaphore_release,
    "semaphore-value": Scheduler._client_semaphore_value,
    "event-set": Scheduler._client_event_set,
    "event-clear": Scheduler._client_event_clear,
    "event-wait": Scheduler._client_event_wait,
    "event-is-set": Scheduler._client_event_is_set,
    "multilock-acquire": Scheduler._client_multilock_acquire,
    "multilock-release": Scheduler._client_multilock_release,
    "publish-dataset": Scheduler._client_publish_dataset,
    "unpublish-dataset": Scheduler._client_unpublish_dataset,
    "get-dataset": Scheduler._client_get_dataset,
    "list-datasets": Scheduler._client_list_datasets,
    "want-keys": Scheduler._client_want_keys,
    "fire-and-forget": Scheduler._client_fire_and_forget,
    # placement and scheduling controls
    "retry": Scheduler._client_retry,
}
