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
"""

from __future__ import annotations

import inspect
import logging
import math
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
from trioclust.comm import Link, writes_deferred
from trioclust.comm import serve as comm_serve
from trioclust.core import adaptive
from trioclust.core import events as ev
from trioclust.core import instructions as ins
from trioclust.core.keys import Key
from trioclust.core.scheduler_state import SchedulerState
from trioclust.dashboard.task_stream import TaskStream, key_prefix
from trioclust.errors import CommClosedError, RemoteError
from trioclust.protocol import Serialized
from trioclust.protocol import messages as msgs
from trioclust.runtime import profiling
from trioclust.runtime.execution import call_function
from trioclust.runtime.log_capture import process_logs, server_label
from trioclust.runtime.scheduler_coordination import FIRE_AND_FORGET, CoordinationHandlers
from trioclust.runtime.server import Server
from trioclust.transport.addresses import parse_address, unparse_host_port

if TYPE_CHECKING:
    from trioclust.security import Security
    from trioclust.transport import ConnectionHandler

logger = logging.getLogger("trioclust.scheduler")

#: recent finished runs whose durations an adaptive decision averages per prefix
_ADAPTIVE_RUNS = 1000


class Scheduler(CoordinationHandlers, Server):
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

    def _worker_register(self, peer: _WorkerPeer, msg: msgs.RegisterWorkerMsg) -> msgs.RegisterWorkerReply:
        address = peer.address = msg["address"]
        assert peer.link is not None
        if self.worker_links.get(address, peer.link) is not peer.link:
            # a stale link for a re-registering worker: close it quietly
            self._leaving.discard(address)
            self.worker_links.pop(address)
        self.worker_links[address] = peer.link
        self._last_seen[address] = time.monotonic()
        self.worker_metrics[address] = dict(msg["metrics"])
        for upload in self.uploads.values():  # ahead of any task it is sent
            peer.link.send(upload)
        for plugin in self.worker_plugins.values():
            peer.link.send(plugin)
        for nanny_plugin in self.nanny_plugins.values():
            peer.link.send(nanny_plugin)
        self._handle(
            ev.AddWorker(
                address=address, nthreads=msg["nthreads"], name=msg["name"] or address,
                memory_limit=msg["memory_limit"], resources=msg.get("resources"),
                stimulus_id=msg["stimulus_id"],
            )
        )
        self._notify_workers_changed()
        if self.plugins:
            self._plugins_call("add_worker", scheduler=self, worker=address)
        logger.info("Register worker %s (name %s, %s threads)", address, msg["name"], msg["nthreads"])
        return {"scheduler": self.id, "address": self.address, "time": time.time()}

    def _seen(self, peer: _WorkerPeer) -> str:
        address = peer.address
        assert address is not None, "worker sent a message before registering"
        self._last_seen[address] = time.monotonic()
        return address

    # Task reports go to the core's report(), which keeps them for one pass of
    # the state machine once the batches the event loop received at once are
    # all read (_report_passes); any other message handles them first.

    def _worker_task_finished(self, peer: _WorkerPeer, msg: msgs.TaskFinishedMsg) -> None:
        event = ev.TaskFinished(
            worker=self._seen(peer), key=msg["key"], nbytes=msg["nbytes"], type_name=msg["type"],
            value=msg.get("value"), stimulus_id=msg["stimulus_id"],
        )
        # the run ends now, ahead of its pass, with the worker's timings
        self.task_stream.finished(
            event.key, event.worker, "memory", msg.get("start"), msg.get("stop"),
            msg.get("thread", 0), msg.get("transfers"), event.nbytes,
        )
        told_early = self.state.report(event)
        if told_early:
            self._dispatch_all(told_early)

    def _worker_task_started(self, peer: _WorkerPeer, msg: msgs.TaskStartedMsg) -> None:
        self.state.report(
            ev.TaskStarted(worker=self._seen(peer), key=msg["key"], stimulus_id=msg["stimulus_id"])
        )

    def _worker_task_erred(self, peer: _WorkerPeer, msg: msgs.TaskErredMsg) -> None:
        worker = self._seen(peer)
        self.task_stream.finished(
            msg["key"], worker, "erred", msg.get("start"), msg.get("stop"), msg.get("thread", 0),
            msg.get("transfers"), 0,
        )
        self._handle(
            ev.TaskErred(
                worker=worker, key=msg["key"], exception=msg["exception"],
                traceback=msg["traceback"], exception_text=msg["exception_text"],
                stimulus_id=msg["stimulus_id"],
            )
        )

    def _worker_missing_data(self, peer: _WorkerPeer, msg: msgs.MissingDataMsg) -> None:
        self._handle(
            ev.MissingData(
                worker=self._seen(peer), key=msg["key"], errant_worker=msg["errant_worker"],
                stimulus_id=msg["stimulus_id"],
            )
        )

    def _worker_reschedule(self, peer: _WorkerPeer, msg: msgs.RescheduleMsg) -> None:
        self._handle(
            ev.RescheduleTask(worker=self._seen(peer), key=msg["key"], stimulus_id=msg["stimulus_id"])
        )

    def _worker_long_running(self, peer: _WorkerPeer, msg: msgs.LongRunningMsg) -> None:
        self._handle(
            ev.TaskSeceded(worker=self._seen(peer), key=msg["key"], stimulus_id=msg["stimulus_id"])
        )

    def _worker_heartbeat(self, peer: _WorkerPeer, msg: msgs.HeartbeatMsg) -> msgs.HeartbeatReply:
        address = self._seen(peer)
        metrics = self.worker_metrics[address] = dict(msg["metrics"])
        now = time.time()
        self.worker_history.append(
            (now, address, float(metrics.get("cpu") or 0.0), int(metrics.get("memory") or 0))
        )
        return {"time": now}

    def _worker_unregister(self, peer: _WorkerPeer, msg: msgs.UnregisterMsg) -> None:
        self._leaving.add(self._seen(peer))

    def _worker_status_change(self, peer: _WorkerPeer, msg: msgs.WorkerStatusChangeMsg) -> None:
        paused = msg["status"] == "paused"
        address = self._seen(peer)
        metrics = self.worker_metrics.setdefault(address, {})
        metrics["status"] = msg["status"]
        self._handle(
            ev.WorkerPaused(
                worker=address, paused=paused, reason=msg["reason"], stimulus_id=msg["stimulus_id"]
            )
        )

    def _worker_threads_held(self, peer: _WorkerPeer, msg: msgs.ThreadsHeldMsg) -> None:
        address = self._seen(peer)
        self.worker_metrics.setdefault(address, {})["threads_held"] = msg["held"]
        self._handle(ev.ThreadsHeld(worker=address, held=msg["held"], stimulus_id=msg["stimulus_id"]))

    def _reports_received(self) -> None:
        """A worker's batch was read: its reports wait for the round's other batches."""
        if not self._pass_queued:
            self._pass_queued = True
            self._reports_due.set()

    async def _report_passes(self) -> None:
        """Handle the gathered task reports once per round of the event loop.

        Woken by the first worker batch of a round, this task runs after every
        reader that the loop woke in the same round (trio runs the tasks made
        runnable meanwhile in its next round), so with many workers the
        reports of all of them are one pass of the state machine.
        """
        while True:
            await self._reports_due.wait()
            self._reports_due = trio.Event()
            self._pass_queued = False
            try:
                with writes_deferred():
                    self._handle()
            except Exception:
                logger.exception("Scheduler: handling task reports failed")

    def _remove_worker(self, address: str, reason: str, expected: bool) -> None:
        if self.state.has_reports:
            self._handle()  # what it reported before leaving comes first, while it is here
        self.worker_links.pop(address, None)
        self._leaving.discard(address)
        self._last_seen.pop(address, None)
        self.worker_metrics.pop(address, None)
        log = logger.info if expected else logger.warning
        log("Remove worker %s: %s", address, reason)
        self._handle(
            ev.RemoveWorker(
                address=address, reason=reason, expected=expected,
                stimulus_id=f"remove-worker-{time.time()}",
            )
        )
        self._notify_workers_changed()
        if self.plugins:
            self._plugins_call(
                "remove_worker", scheduler=self, worker=address, reason=reason,
                stimulus_id=f"remove-worker-{address}",
            )

    async def _steal_looks(self) -> None:
        """The core's look for stranded tasks (core/scheduler_stealing.py),
        every ``scheduler.work-stealing-interval`` while two workers are
        connected and some task is processing."""
        state = self.state
        if not state.work_stealing:
            return
        interval = config.get_float("scheduler.work-stealing-interval")
        n = 0
        while True:
            await trio.sleep(interval)
            if len(self.worker_links) > 1 and state.count("processing"):
                n += 1
                self._handle(ev.StealLook(stimulus_id=f"steal-look-{n}"))

    async def _check_worker_ttl(self) -> None:
        if not math.isfinite(self.worker_ttl):
            return
        while True:
            await trio.sleep(self.worker_ttl / 4)
            now = time.monotonic()
            for address, seen in list(self._last_seen.items()):
                if now - seen > self.worker_ttl and address in self.worker_links:
                    logger.warning(
                        "Worker %s sent no heartbeat for %.1f s (worker-ttl %.1f s): removing it",
                        address, now - seen, self.worker_ttl,
                    )
                    link = self.worker_links[address]
                    self._remove_worker(address, "heartbeat timeout", expected=False)
                    await link.aclose()

    async def retire_workers(
        self, addresses: list[str] | None = None, n: int | None = None, timeout: float | None = None
    ) -> list[str]:
        """Close workers gracefully: their data moves to the other workers first.

        Args:
            addresses: the workers to retire; or
            n: how many to retire (those holding the least data go first).
            timeout: seconds to wait for their data to move and for them to
                leave; default ``runtime.close-timeout`` times four.

        Returns the addresses retired. Keys only they held are copied to the
        remaining workers (round-robin) before they are told to close, so
        nothing is recomputed.
        """
        if addresses is None:
            addresses = list(self.state.workers_to_retire(n or 0))
        retiring = [a for a in addresses if a in self.worker_links]
        limit = timeout if timeout is not None else 4 * config.get_float("runtime.close-timeout")
        moves: list[ins.AcquireReplicas] = []
        self._handle(
            ev.RetireWorkers(workers=tuple(retiring), stimulus_id=f"retire-workers-{time.time()}"),
            moves=moves,
        )
        with trio.move_on_after(limit):
            async with trio.open_nursery() as nursery:
                for move in moves:
                    nursery.start_soon(self._acquire_replicas, move)
        with trio.move_on_after(limit):
            while any(a in self.worker_links for a in retiring):
                await self._workers_changed.wait()
        return retiring

    async def _acquire_replicas(self, move: ins.AcquireReplicas) -> None:
        """Carry out one AcquireReplicas and tell the core how it went (also
        when it is cancelled: the retiring worker then leaves all the same)."""
        event: ev.AddReplicas | ev.ReplicasFailed = ev.ReplicasFailed(
            worker=move.worker, retiring=move.retiring, reason="timed out",
            stimulus_id=move.stimulus_id,
        )
        link = self.worker_links.get(move.worker)
        try:
            if link is None:
                raise CommClosedError(f"worker {move.worker} left")
            reply: msgs.AcquireReplicasReply = await link.request(
                "acquire-replicas", who_has={k: list(v) for k, v in move.who_has.items()},
                stimulus_id=move.stimulus_id,
            )
            event = ev.AddReplicas(
                worker=move.worker, keys=tuple(reply["keys"]), retiring=move.retiring,
                stimulus_id=move.stimulus_id,
            )
        except (CommClosedError, RemoteError) as exc:
            logger.warning("Could not move data from %s to %s: %s", move.retiring, move.worker, exc)
            event = ev.ReplicasFailed(
                worker=move.worker, retiring=move.retiring, reason=str(exc),
                stimulus_id=move.stimulus_id,
            )
        finally:
            self._handle(event)

    def _notify_workers_changed(self) -> None:
        self._workers_changed.set()
        self._workers_changed = trio.Event()

    async def wait_for_workers(self, n: int) -> None:
        """Wait until at least ``n`` workers are registered."""
        while len(self.state.workers) < n:
            await self._workers_changed.wait()

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

    def _client_update_graph(self, client: str, msg: msgs.UpdateGraphMsg) -> None:
        tasks = tuple(
            ev.NewTask(key=t[0], run_spec=t[1], dependencies=tuple(t[2]), priority=int(t[3]))
            if len(t) == 4
            else _restricted_task(t)
            for t in msg["tasks"]
        )
        self._handle(
            ev.UpdateGraph(
                client=client, tasks=tasks, wanted=tuple(msg["wanted"]), stimulus_id=msg["stimulus_id"]
            )
        )
        if self.plugins:
            self._plugins_call(
                "update_graph", scheduler=self, client=client, keys=set(msg["wanted"]),
                tasks=[t.key for t in tasks], stimulus_id=msg["stimulus_id"],
            )

    def _client_retry(self, client: str, msg: msgs.RetryMsg) -> None:
        self._handle(ev.RetryTasks(client=client, keys=tuple(msg["keys"]), stimulus_id=msg["stimulus_id"]))

    def _client_release_keys(self, client: str, msg: msgs.ReleaseKeysMsg) -> None:
        self._handle(ev.ReleaseKeys(client=client, keys=tuple(msg["keys"]), stimulus_id=msg["stimulus_id"]))

    def _client_update_data(self, client: str, msg: msgs.UpdateDataMsg) -> None:
        self._handle(
            ev.UpdateData(
                client=client, who_has={k: tuple(v) for k, v in msg["who_has"].items()},
                nbytes=dict(msg["nbytes"]), stimulus_id=msg["stimulus_id"],
            )
        )

    def _client_who_has(self, client: str, msg: msgs.WhoHasMsg) -> dict[Key, list[str]]:
        if self.state.has_reports:
            # a result told early (KeyInMemory before its pass) is asked for
            # next: its holder is known only once the report is handled
            self._handle()
        # a key this client no longer wants here (released, or never known) is
        # left out: its futures are cancelled, and fetching it would wait in vain
        tasks, state = self.state.tasks, self.state
        return {k: sorted(tasks[k].who_has) for k in msg["keys"] if state.wants(client, k)}

    def _client_scheduler_info(self, client: str, msg: msgs.SchedulerInfoMsg) -> dict[str, Any]:
        return self.identity()

    async def _client_run_on_scheduler(self, client: str, msg: msgs.RunOnSchedulerMsg) -> Any:
        return await call_function(msg, self, ("dask_scheduler", "scheduler"))

    def _client_id(self, client: str, msg: msgs.ClientIdMsg) -> str:
        return client

    async def _client_wait_for_workers(self, client: str, msg: msgs.WaitForWorkersMsg) -> None:
        await self.wait_for_workers(msg["n"])

    async def _client_retire_workers(self, client: str, msg: msgs.RetireWorkersMsg) -> list[str]:
        return await self.retire_workers(msg.get("workers"), msg.get("n"))

    async def _client_broadcast(self, client: str, msg: msgs.BroadcastMsg) -> msgs.BroadcastReply:
        """Run a function on workers (``client.run``), concurrently."""
        targets = msg.get("workers") or list(self.worker_links)
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}

        async def one(address: str) -> None:
            link = self.worker_links.get(address)
            if link is None:
                errors[address] = {"exception": None, "text": f"no worker at {address}"}
                return
            try:
                results[address] = await link.request(
                    "run", function=msg["function"], args=msg["args"], kwargs=msg["kwargs"]
                )
            except RemoteError as exc:
                errors[address] = {"exception": exc.exception, "text": exc.text}
            except CommClosedError as exc:
                errors[address] = {"exception": None, "text": f"worker {address} left: {exc}"}

        async with trio.open_nursery() as nursery:
            for address in targets:
                nursery.start_soon(one, address)
        return {"results": results, "errors": errors}

    # ------------------------------------------- cluster managers (deploy/)
    def _client_adaptive_workload(
        self, client: str, msg: msgs.AdaptiveWorkloadMsg
    ) -> msgs.AdaptiveWorkloadReply:
        """What an adaptive decision needs: work by prefix, run times, workers."""
        runs: dict[str, list[float]] = {}
        for record in self.task_stream.recent(_ADAPTIVE_RUNS):
            if record.status == "memory":
                runs.setdefault(record.prefix, []).append(record.stop - record.start)
        durations = {prefix: sum(times) / len(times) for prefix, times in runs.items()}
        load = adaptive.measure(self.state, durations, key_prefix)
        reply: msgs.AdaptiveWorkloadReply = {
            "ready": load.ready, "processing": load.processing, "durations": load.durations,
            "workers": [
                {"address": w.address, "nthreads": w.nthreads, "memory_limit": w.memory_limit,
                 "nbytes": w.nbytes, "processing": w.processing}
                for w in load.workers
            ],
        }
        return reply

    # --------------------------------------------------- client operations
    def _client_get_who_has(self, client: str, msg: msgs.GetWhoHasMsg) -> dict[Key, list[str]]:
        tasks = self.state.tasks
        keys = msg["keys"] if msg["keys"] is not None else list(tasks)
        return {k: sorted(tasks[k].who_has) if k in tasks else [] for k in keys}

    def _client_has_what(self, client: str, msg: msgs.HasWhatMsg) -> dict[str, list[Key]]:
        workers = self.state.workers
        names = msg["workers"] if msg["workers"] is not None else list(workers)
        return {w: sorted(workers[w].has_what) if w in workers else [] for w in names}

    def _client_nthreads(self, client: str, msg: msgs.NthreadsMsg) -> dict[str, int]:
        workers = self.state.workers
        names = msg["workers"] if msg["workers"] is not None else list(workers)
        return {w: workers[w].nthreads for w in names if w in workers}

    async def _client_replicate(self, client: str, msg: msgs.ReplicateMsg) -> None:
        await self._copy_replicas(
            ev.Replicate(
                keys=tuple(msg["keys"]), n=msg["n"], workers=self._addresses(msg["workers"]),
                stimulus_id=f"replicate-{time.time()}",
            )
        )

    async def _client_rebalance(self, client: str, msg: msgs.RebalanceMsg) -> None:
        await self._copy_replicas(
            ev.Rebalance(
                keys=tuple(msg["keys"]) if msg["keys"] is not None else None,
                workers=self._addresses(msg["workers"]), stimulus_id=f"rebalance-{time.time()}",
            )
        )

    def _addresses(self, workers: list[str] | None) -> tuple[str, ...] | None:
        """Worker addresses for addresses or names (as Dask's ``workers=``)."""
        if workers is None:
            return None
        by_name = {w.name: a for a, w in self.state.workers.items()}
        return tuple(w if w in self.state.workers else by_name.get(w, w) for w in workers)

    async def _copy_replicas(self, event: ev.Replicate | ev.Rebalance) -> None:
        """Hand the event to the core and carry out the copies it plans."""
        moves: list[ins.AcquireReplicas] = []
        self._handle(event, moves=moves)
        with trio.move_on_after(4 * config.get_float("runtime.close-timeout")):
            async with trio.open_nursery() as nursery:
                for move in moves:
                    nursery.start_soon(self._acquire_replicas, move)

    async def _client_restart(self, client: str, msg: msgs.RestartMsg) -> None:
        await self.restart(msg["timeout"], msg["wait_for_workers"])

    async def restart(self, timeout: float | None = None, wait_for_workers: bool = True) -> None:
        """Release every client's keys, cancel their futures, and restart every worker.

        Workers under a nanny come back as fresh processes; a worker without
        one closes, as in Dask. With ``wait_for_workers``, waits until as many
        workers as before are registered, else until the old ones are gone;
        raises ``TimeoutError`` after ``timeout`` seconds (default four times
        ``comm.timeouts.connect``).
        """
        limit = timeout if timeout is not None else 4 * config.get_float("comm.timeouts.connect")
        stim = f"restart-{time.time()}"
        releases = [
            ev.ReleaseKeys(client=c, keys=self.state.wanted_by(c), stimulus_id=stim)
            for c in list(self.client_links)
        ]
        self._handle(*releases)
        for link in list(self.client_links.values()):
            told: msgs.RestartClientMsg = {"op": "restart"}
            try:
                link.send(told)
            except CommClosedError:
                pass
        old = set(self.worker_links)
        for address in old:
            link = self.worker_links[address]
            restart: msgs.RestartWorkerMsg = {"op": "restart"}
            try:
                self._leaving.add(address)
                link.send(restart)
            except CommClosedError:
                pass
        self._plugins_call("restart", self)
        with trio.move_on_after(limit) as waited:
            while any(a in self.worker_links for a in old) or (
                wait_for_workers and len(self.worker_links) < len(old)
            ):
                await self._workers_changed.wait()
        if waited.cancelled_caught:
            back = len(set(self.worker_links) - old)
            raise TimeoutError(
                f"client.restart: {back} of {len(old)} workers were back after {limit:g} s "
                f"(workers without a nanny do not come back)"
            )

    # ------------------------------------------------------------- plugins
    # Scheduler plugins' hooks are called from here, after the core's pass
    # that made the change: the core knows nothing of plugins.

    async def _client_register_scheduler_plugin(
        self, client: str, msg: msgs.RegisterSchedulerPluginMsg
    ) -> None:
        name = msg["name"]
        if name in self.plugins and msg["idempotent"]:
            return
        plugin = msg["plugin"].deserialize() if isinstance(msg["plugin"], Serialized) else msg["plugin"]
        start = getattr(plugin, "start", None)
        if start is not None:
            result = start(self)
            if inspect.isawaitable(result):
                await result
        self.plugins[name] = plugin

    async def _client_register_worker_plugin(
        self, client: str, msg: msgs.RegisterWorkerPluginMsg
    ) -> dict[str, str]:
        name = msg["name"]
        add: msgs.PluginAddMsg = {"op": "plugin-add", "plugin": msg["plugin"], "name": name}
        if name in self.worker_plugins and msg["idempotent"]:
            return {}
        self.worker_plugins[name] = add
        replies: dict[str, str] = {}

        async def one(address: str, link: Link) -> None:
            try:
                await link.request("plugin-add", plugin=add["plugin"], name=name)
                replies[address] = "OK"
            except (RemoteError, CommClosedError) as exc:
                replies[address] = str(exc)

        async with trio.open_nursery() as nursery:
            for address, link in list(self.worker_links.items()):
                nursery.start_soon(one, address, link)
        return replies

    async def _client_register_nanny_plugin(
        self, client: str, msg: msgs.RegisterNannyPluginMsg
    ) -> dict[str, str]:
        name = msg["name"]
        add: msgs.NannyPluginAddMsg = {"op": "nanny-plugin-add", "plugin": msg["plugin"], "name": name}
        if name in self.nanny_plugins and msg["idempotent"]:
            return {}
        self.nanny_plugins[name] = add
        replies: dict[str, str] = {}
        restart: list[str] = []

        async def one(address: str, link: Link) -> None:
            try:
                reply = await link.request("nanny-plugin-add", plugin=add["plugin"], name=name)
            except (RemoteError, CommClosedError) as exc:
                replies[address] = str(exc)
                return
            if reply is not None:  # None: this worker runs without a nanny
                replies[address] = reply["status"]
                if reply["restart"]:
                    restart.append(address)

        async with trio.open_nursery() as nursery:
            for address, link in list(self.worker_links.items()):
                nursery.start_soon(one, address, link)
        for address in restart:  # NannyPlugin.restart: a fresh worker process
            to_restart = self.worker_links.get(address)
            if to_restart is not None and not to_restart.closed:
                restart_msg: msgs.RestartWorkerMsg = {"op": "restart"}
                to_restart.send(restart_msg)
        return replies

    async def _client_unregister_worker_plugin(
        self, client: str, msg: msgs.UnregisterPluginMsg
    ) -> dict[str, str]:
        name, nanny = msg["name"], msg["nanny"]
        known: dict[str, Any] = self.nanny_plugins if nanny else self.worker_plugins
        if known.pop(name, None) is None:
            kind = "nanny" if nanny else "worker"
            raise ValueError(
                f"Tried to remove the unknown {kind} plugin {name!r}; registered: {sorted(known)}"
            )
        replies: dict[str, str] = {}

        async def one(address: str, link: Link) -> None:
            try:
                reply = await link.request("plugin-remove", name=name, nanny=nanny)
            except (RemoteError, CommClosedError) as exc:
                replies[address] = str(exc)
                return
            if reply is not None:
                replies[address] = reply

        async with trio.open_nursery() as nursery:
            for address, link in list(self.worker_links.items()):
                nursery.start_soon(one, address, link)
        return replies

    def _plugins_call(self, hook: str, *args: Any, **kwargs: Any) -> None:
        """Call ``hook`` of every scheduler plugin that has it; an async one runs
        in the scheduler's nursery. Errors are logged, never raised."""
        for name, plugin in list(self.plugins.items()):
            fn = getattr(plugin, hook, None)
            if fn is None:
                continue
            try:
                result = fn(*args, **kwargs)
            except Exception:
                logger.exception("Scheduler plugin %r failed in %s", name, hook)
                continue
            if inspect.isawaitable(result) and self._nursery is not None:
                self._nursery.start_soon(_await_logged, result, f"Scheduler plugin {name!r} {hook}")

    def _plugin_transitions(self, mark: Any) -> None:
        """Tell plugins the transitions logged after ``mark`` (the log's last entry before)."""
        log = self.state.transition_log
        new = []
        for entry in reversed(log):
            if entry is mark:
                break
            new.append(entry)
        for key, start, finish, stimulus_id, _ in reversed(new):
            self._plugins_call("transition", key, start, finish, stimulus_id=stimulus_id)

    async def _close_plugins(self) -> None:
        with trio.move_on_after(config.get_float("runtime.close-timeout")) as scope:
            scope.shield = True
            for name, plugin in list(self.plugins.items()):
                close = getattr(plugin, "close", None)
                if close is None:
                    continue
                try:
                    result = close()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("Scheduler plugin %r failed to close", name)

    async def _client_upload_file(self, client: str, msg: msgs.UploadFileMsg) -> None:
        """Send the file to every worker now, keep it for those that join later;
        raise the first worker's error (a failed import) as itself."""
        upload: msgs.UploadFileWorkerMsg = {
            "op": "upload-file", "filename": msg["filename"], "data": msg["data"], "load": msg["load"],
        }
        self.uploads[msg["filename"]] = upload
        errors: list[RemoteError] = []

        async def one(link: Link) -> None:
            try:
                await link.request(
                    "upload-file", filename=upload["filename"], data=upload["data"], load=upload["load"]
                )
            except RemoteError as exc:
                errors.append(exc)
            except CommClosedError:
                pass  # it left; a worker that joins later gets the file when it registers

        async with trio.open_nursery() as nursery:
            for link in list(self.worker_links.values()):
                nursery.start_soon(one, link)
        if errors:
            error = errors[0]
            try:
                original = error.exception.deserialize() if error.exception is not None else None
            except Exception:  # its class lives in the uploaded file, say
                original = None
            raise original if isinstance(original, Exception) else RuntimeError(error.text)

    # --------------------------------------------------------- diagnostics
    def _client_get_task_stream(self, client: str, msg: msgs.GetTaskStreamMsg) -> msgs.TaskStreamReply:
        stream = self.task_stream
        since = msg.get("since")
        if since is not None:
            records = stream.recent(msg.get("count"), since=since)
        else:
            records = stream.between(msg.get("start"), msg.get("stop"), msg.get("count"))
        return {"records": [r.as_dask() for r in records], "last_id": stream.last_id, "time": time.time()}

    def _client_get_worker_history(
        self, client: str, msg: msgs.GetWorkerHistoryMsg
    ) -> list[tuple[float, str, float, int]]:
        start = msg["start"]
        return [row for row in self.worker_history if row[0] >= start]

    async def _client_get_logs(self, client: str, msg: msgs.GetLogsMsg) -> Any:
        n = msg.get("n")
        if msg["scheduler"]:
            return process_logs().recent("Scheduler", n)
        targets = msg.get("workers") or list(self.worker_links)
        out: dict[str, Any] = {}

        async def one(address: str) -> None:
            link = self.worker_links.get(address)
            if link is None:
                return
            try:
                out[address] = await link.request("get-logs", n=n)
            except (CommClosedError, RemoteError) as exc:
                out[address] = [("ERROR", f"could not get the logs of {address}: {exc}")]

        async with trio.open_nursery() as nursery:
            for address in targets:
                nursery.start_soon(one, address)
        return out

    async def _client_profile(self, client: str, msg: msgs.ProfileMsg) -> dict[str, Any]:
        targets = msg.get("workers") or list(self.worker_links)
        trees: dict[str, Any] = {}

        async def one(address: str) -> None:
            link = self.worker_links.get(address)
            if link is None:
                return
            try:
                trees[address] = await link.request(
                    "profile", duration=msg["duration"], interval=msg["interval"]
                )
            except (CommClosedError, RemoteError) as exc:
                logger.warning("Could not profile worker %s: %s", address, exc)

        async with trio.open_nursery() as nursery:
            for address in targets:
                nursery.start_soon(one, address)
        if msg["merge_workers"]:
            return profiling.merge(*trees.values())
        return trees

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



async def _await_logged(awaitable: Any, what: str) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("%s failed", what)


def _restricted_task(t: list[Any]) -> ev.NewTask:
    """A task of an update-graph with its options (protocol/messages.py's TaskOptions)."""
    options: msgs.TaskOptions = t[4]
    resources = options.get("resources")
    return ev.NewTask(
        key=t[0], run_spec=t[1], dependencies=tuple(t[2]), priority=int(t[3]),
        workers=tuple(options.get("workers", ())),
        allow_other_workers=bool(options.get("allow_other_workers", False)),
        resources={str(k): float(v) for k, v in resources.items()} if resources else None,
        retries=int(options.get("retries", 0)),
    )


class _WorkerPeer:
    """What the scheduler knows of one worker connection."""

    __slots__ = ("address", "link")

    def __init__(self) -> None:
        self.address: str | None = None  # set when it registers
        self.link: Link | None = None


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
