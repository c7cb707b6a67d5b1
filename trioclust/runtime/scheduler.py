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

Every message becomes one or more core events; ``_handle`` feeds them to
``SchedulerState.handle`` and turns each instruction into a non-blocking
``Link.send`` to the worker or client it names. Nothing on that path awaits or
starts a task: the links' writers coalesce whatever piles up behind a write in
flight into one batch. Workers' task reports (``task-started``,
``task-finished``) are gathered instead, from every worker batch that the
event loop read in one round, and fed in one pass when those reads are done
(``_report_passes``); any other message from a worker, and a worker's
removal, feeds the gathered ones first (every event does, see ``_handle``:
a client's release of a key it was told of early must not come before the
report that told it). The first ``task-finished`` of a
round whose task is still processing on its sender is also sent on to the
clients waiting for it at once, from the reader, and its event names them
(``TaskFinished.told``) so the pass tells only the others: a lone result (a
``submit().result()`` loop) then skips the pass's task switch and the state
machine on its way to the client.
"""

from __future__ import annotations

import logging
import math
import os
import ssl
import time
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from trioclust import config
from trioclust.comm import CommClosedError, Link, RemoteError, writes_deferred
from trioclust.comm import serve as comm_serve
from trioclust.core import events as ev
from trioclust.core import instructions as ins
from trioclust.core.scheduler_state import SchedulerState
from trioclust.core.scheduler_tasks import PROCESSING
from trioclust.dashboard.task_stream import TaskStream
from trioclust.runtime.execution import call_function
from trioclust.runtime.log_capture import server_label
from trioclust.runtime.server import Server
from trioclust.transport.addresses import parse_address, unparse_host_port

if TYPE_CHECKING:
    from trioclust.security import Security
    from trioclust.transport import ConnectionHandler

logger = logging.getLogger("trioclust.scheduler")


class Scheduler(Server):
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
            transition_log_length=config.get_int("scheduler.transition-log-length"),
            validate=bool(config.get("scheduler.validate")),
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
        # task reports from all workers, handled in one pass per round of the
        # event loop (see _serve_worker)
        self._reports: list[Any] = []
        self._told_early = False  # a result of this round went to its clients from the reader
        self._reports_due = trio.Event()
        self._pass_queued = False
        self._nursery: trio.Nursery | None = None
        self._started = time.time()
        self.task_stream = TaskStream()
        self.dashboard_link: str | None = None
        self._dashboard_address = dashboard_address

    def __repr__(self) -> str:
        return (
            f"<Scheduler {self.address or self._listen_address!r} status={self.status} "
            f"workers={len(self.state.workers)} tasks={len(self.state.tasks)}>"
        )

    def story(self, *keys: str) -> list[tuple[str, str, str, str, float]]:
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
                self.status = "running"
                logger.info("Scheduler at: %s", self.address)
                task_status.started(self)
                await self._close_requested.wait()
                nursery.cancel_scope.cancel()
        finally:
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
        address: str | None = None

        def register(msg: dict[str, Any]) -> dict[str, Any]:
            nonlocal address
            address = str(msg["address"])
            if address in self.worker_links and self.worker_links[address] is not link:
                # a stale link for a re-registering worker: close it quietly
                self._leaving.discard(address)
                self.worker_links.pop(address)
            self.worker_links[address] = link
            self._last_seen[address] = time.monotonic()
            self.worker_metrics[address] = dict(msg.get("metrics") or {})
            self._handle(
                ev.AddWorker(
                    address=address,
                    nthreads=int(msg.get("nthreads", 1)),
                    name=str(msg.get("name") or address),
                    memory_limit=int(msg.get("memory_limit") or 0),
                    stimulus_id=f"register-worker-{time.time()}",
                )
            )
            self._notify_workers_changed()
            logger.info("Register worker %s (name %s, %s threads)", address, msg.get("name"), msg.get("nthreads"))
            return {"scheduler": self.id, "address": self.address}

        def seen() -> str:
            assert address is not None, "worker sent a message before registering"
            self._last_seen[address] = time.monotonic()
            return address

        # Task reports are gathered, and handled together once the batches
        # that the event loop received at once are all read (one pass of the
        # state machine, and the messages it leads to leave as one per
        # peer); any other message from a worker handles the gathered
        # reports first, so each worker's order is kept.

        def task_finished(msg: dict[str, Any]) -> None:
            worker, key, type_name, value = seen(), msg["key"], msg.get("type") or "", msg.get("value")
            told: tuple[str, ...] = ()
            if not self._told_early:  # the round's first result: to its clients now
                self._told_early = True
                told = self._tell_early(worker, key, type_name, value)
            self._reports.append(
                ev.TaskFinished(
                    worker=worker, key=key, nbytes=int(msg.get("nbytes") or 0),
                    type_name=type_name, value=value, told=told,
                    stimulus_id=msg.get("stimulus_id") or f"task-finished-{key}",
                )
            )

        def task_started(msg: dict[str, Any]) -> None:
            self._reports.append(ev.TaskStarted(worker=seen(), key=msg["key"], stimulus_id="task-started"))

        def task_erred(msg: dict[str, Any]) -> None:
            self._handle(
                ev.TaskErred(
                    worker=seen(), key=msg["key"], exception=msg.get("exception"),
                    traceback=msg.get("traceback"), exception_text=msg.get("text") or "",
                    stimulus_id=msg.get("stimulus_id") or f"task-erred-{msg['key']}",
                )
            )

        def missing_data(msg: dict[str, Any]) -> None:
            self._handle(
                ev.MissingData(
                    worker=seen(), key=msg["key"], errant_worker=msg["errant_worker"],
                    stimulus_id=msg.get("stimulus_id") or f"missing-data-{time.time()}",
                )
            )

        def reschedule(msg: dict[str, Any]) -> None:
            self._handle(
                ev.RescheduleTask(
                    worker=seen(), key=msg["key"],
                    stimulus_id=msg.get("stimulus_id") or f"reschedule-{time.time()}",
                )
            )

        def heartbeat(msg: dict[str, Any]) -> None:
            self.worker_metrics[seen()] = dict(msg.get("metrics") or {})

        def unregister(msg: dict[str, Any]) -> None:
            self._leaving.add(seen())

        link = Link(
            comm,
            {
                "register-worker": register,
                "task-finished": task_finished,
                "task-started": task_started,
                "task-erred": task_erred,
                "missing-data": missing_data,
                "reschedule": reschedule,
                "heartbeat": heartbeat,
                "unregister": unregister,
            },
            name=f"scheduler->worker {comm.peer_address}",
            on_batch=self._reports_received,
        )
        try:
            await link.run()
        finally:
            if address is not None and self.worker_links.get(address) is link:
                expected = address in self._leaving or self.status != "running"
                self._remove_worker(address, "worker closed" if expected else "connection lost", expected)

    def _handle_reports(self) -> None:
        self._told_early = False
        if self._reports:
            events, self._reports = self._reports, []
            self._handle(*events)

    def _tell_early(self, worker: str, key: str, type_name: str, value: Any) -> tuple[str, ...]:
        """Send a result to the clients waiting for it ahead of its pass (see
        the module's notes); returns those told."""
        told = []
        # once this one is handled, nothing else may be running: then send at once
        urgent = self.state.count(PROCESSING) <= 1
        for client in self.state.result_waiters(worker, key):
            instruction = ins.KeyInMemory(client=client, key=key, type_name=type_name, value=value)
            try:
                if self._send_in_memory(instruction, {}, urgent):
                    told.append(client)
            except CommClosedError:
                pass  # the client is going away
        return tuple(told)

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
                    self._handle_reports()
            except Exception:
                logger.exception("Scheduler: handling task reports failed")

    def _remove_worker(self, address: str, reason: str, expected: bool) -> None:
        self._handle_reports()  # what it reported before leaving comes first
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
            timeout: seconds to wait for them to leave; default
                ``runtime.close-timeout`` times four.

        Returns the addresses retired. Keys only they held are copied to the
        remaining workers (round-robin) before they are told to close, so
        nothing is recomputed.
        """
        if addresses is None:
            by_size = sorted(self.state.workers.values(), key=lambda w: (w.nbytes_stored, w.address))
            addresses = [w.address for w in by_size[: n or 0]]
        retiring = [a for a in addresses if a in self.worker_links]
        remaining = [a for a in self.worker_links if a not in retiring]
        for address in retiring:
            ws = self.state.workers.get(address)
            if ws is not None and remaining:
                plans: dict[str, dict[str, list[str]]] = {}
                only_here = sorted(k for k in ws.has_what if self.state.tasks[k].who_has == {address})
                for i, key in enumerate(only_here):
                    plans.setdefault(remaining[i % len(remaining)], {})[key] = [address]
                for target, who_has in plans.items():
                    link = self.worker_links.get(target)
                    if link is None:
                        continue
                    try:
                        reply = await link.request("acquire-replicas", who_has=who_has)
                    except (CommClosedError, RemoteError) as exc:
                        logger.warning("Could not move data from %s to %s: %s", address, target, exc)
                        continue
                    self._handle(
                        ev.AddReplicas(
                            worker=target, keys=tuple(reply["keys"]), stimulus_id=f"retire-{address}"
                        )
                    )
            link = self.worker_links.get(address)
            if link is not None and not link.closed:
                self._leaving.add(address)
                logger.info("Retiring worker %s", address)
                link.send({"op": "close", "reason": "retired by the scheduler"})
        limit = timeout if timeout is not None else 4 * config.get_float("runtime.close-timeout")
        with trio.move_on_after(limit):
            while any(a in self.worker_links for a in retiring):
                await self._workers_changed.wait()
        return retiring

    def _notify_workers_changed(self) -> None:
        self._workers_changed.set()
        self._workers_changed = trio.Event()

    async def wait_for_workers(self, n: int) -> None:
        """Wait until at least ``n`` workers are registered."""
        while len(self.state.workers) < n:
            await self._workers_changed.wait()

    # ------------------------------------------------------------- clients
    async def _serve_client(self, comm: Any) -> None:
        client = f"{comm.peer_info.get('name') or 'client'}-{uuid.uuid4().hex[:8]}"
        stim = f"{client}-{time.time()}"

        def update_graph(msg: dict[str, Any]) -> None:
            tasks = tuple(
                ev.NewTask(key=t[0], run_spec=t[1], dependencies=tuple(t[2]), priority=int(t[3]))
                for t in msg.get("tasks", ())
            )
            self._handle(
                ev.UpdateGraph(
                    client=client, tasks=tasks, wanted=tuple(msg.get("wanted", ())),
                    stimulus_id=msg.get("stimulus_id", stim),
                )
            )

        def release_keys(msg: dict[str, Any]) -> None:
            self._handle(ev.ReleaseKeys(client=client, keys=tuple(msg["keys"]), stimulus_id=stim))

        def want_keys(msg: dict[str, Any]) -> None:
            self._handle(ev.WantKeys(client=client, keys=tuple(msg["keys"]), stimulus_id=stim))

        def update_data(msg: dict[str, Any]) -> None:
            who_has = {k: tuple(v) for k, v in msg["who_has"].items()}
            self._handle(
                ev.UpdateData(
                    client=client, who_has=who_has, nbytes=dict(msg.get("nbytes") or {}),
                    stimulus_id=stim,
                )
            )

        def who_has(msg: dict[str, Any]) -> dict[str, list[str]]:
            tasks = self.state.tasks
            return {k: sorted(tasks[k].who_has) if k in tasks else [] for k in msg["keys"]}

        async def run_on_scheduler(msg: dict[str, Any]) -> Any:
            return await call_function(msg, self, ("dask_scheduler", "scheduler"))

        link = Link(
            comm,
            {
                "update-graph": update_graph,
                "release-keys": release_keys,
                "want-keys": want_keys,
                "update-data": update_data,
                "who-has": who_has,
                "scheduler-info": lambda msg: self.identity(),
                "run-on-scheduler": run_on_scheduler,
                "broadcast": self._broadcast,
                "client-id": lambda msg: client,
                "wait-for-workers": lambda msg: self.wait_for_workers(int(msg["n"])),
                "retire-workers": lambda msg: self.retire_workers(msg.get("workers"), msg.get("n")),
            },
            name=f"scheduler->client {comm.peer_address}",
        )
        self.client_links[client] = link
        self._handle(ev.AddClient(client=client, stimulus_id=stim))
        try:
            await link.run()
        finally:
            self.client_links.pop(client, None)
            self._handle(ev.RemoveClient(client=client, stimulus_id=f"{client}-gone"))

    async def _broadcast(self, msg: dict[str, Any]) -> dict[str, Any]:
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
                    "run", function=msg["function"], args=msg.get("args"), kwargs=msg.get("kwargs")
                )
            except RemoteError as exc:
                errors[address] = {"exception": exc.exception, "text": exc.text}
            except CommClosedError as exc:
                errors[address] = {"exception": None, "text": f"worker {address} left: {exc}"}

        async with trio.open_nursery() as nursery:
            for address in targets:
                nursery.start_soon(one, address)
        return {"results": results, "errors": errors}

    # ------------------------------------------------------------ the core
    def _handle(self, *events: Any) -> None:
        # whatever happens next sees the task reports gathered so far first: a
        # client told a result early (from the reader) may already have
        # dropped the key, or wanted it again, in the message handled now
        self._handle_reports()
        instructions = self.state.handle(*events)
        self.task_stream.observe(events, instructions)
        # Messages of this pass that more of their kind may join: free-keys to
        # a worker, keys-in-memory to a client. A message joins the open one
        # for its peer while nothing else went to that peer in between (the
        # order per peer stays as the instructions say); none is written
        # before this synchronous pass ends.
        joining: dict[tuple[str, str, bool], dict[str, Any]] = {}
        for instruction in instructions:
            try:
                self._dispatch(instruction, joining)
            except CommClosedError:
                # the peer is going away; its link's end removes it properly
                pass

    def _send_in_memory(
        self, i: ins.KeyInMemory, joining: dict[tuple[str, str, bool], dict[str, Any]], urgent: bool
    ) -> bool:
        """Add ``i`` to the open keys-in-memory for its client (see ``_handle``),
        or send a new one; False if the client is gone."""
        msg = joining.get(("memory", i.client, False))
        if msg is None:
            client_link = self.client_links.get(i.client)
            if client_link is None:
                return False
            msg = {"op": "keys-in-memory", "keys": [], "types": []}
            client_link.send(msg, urgent=urgent)
            joining[("memory", i.client, False)] = msg
        msg["keys"].append(i.key)
        msg["types"].append(i.type_name)
        if i.value is not None:
            msg.setdefault("values", {})[i.key] = i.value
        return True

    def _dispatch(self, i: Any, joining: dict[tuple[str, str, bool], dict[str, Any]]) -> None:
        if isinstance(i, ins.KeyInMemory):
            # while other tasks run, more results follow: batch them
            self._send_in_memory(i, joining, urgent=self.state.count(PROCESSING) == 0)
        elif isinstance(i, ins.FreeKeys):
            msg = joining.get(("free", i.worker, i.cancel))
            if msg is None:
                link = self.worker_links.get(i.worker)
                if link is None:
                    return
                msg = {"op": "free-keys", "keys": [], "stimulus_id": i.stimulus_id}
                # dropping data waits for the link's next batch (within
                # comm.lazy-linger): nothing waits for it, and waking an idle
                # worker for it would take a core from the task in flight
                link.send(msg, lazy=not i.cancel)
                joining[("free", i.worker, i.cancel)] = msg
            msg["keys"].extend(i.keys)
        elif isinstance(i, ins.ComputeTask):
            joining.pop(("free", i.worker, True), None)
            joining.pop(("free", i.worker, False), None)
            link = self.worker_links.get(i.worker)
            if link is not None:
                # a worker with more tasks than threads is busy: this one may
                # wait for the link's next batch (see comm.linger)
                ws = self.state.workers.get(i.worker)
                task: dict[str, Any] = {
                    "op": "compute-task", "key": i.key, "run_spec": i.run_spec,
                    "priority": i.priority, "stimulus_id": i.stimulus_id,
                }
                if i.who_has:  # the worker reads a missing one as none
                    task["who_has"] = {k: list(v) for k, v in i.who_has.items()}
                    task["nbytes"] = dict(i.nbytes)
                link.send(task, urgent=ws is None or len(ws.processing) <= ws.nthreads)
        elif isinstance(i, ins.KeyErred):
            joining.pop(("memory", i.client, False), None)
            client_link = self.client_links.get(i.client)
            if client_link is not None:
                client_link.send(
                    {
                        "op": "task-erred", "key": i.key, "exception": i.exception,
                        "traceback": i.traceback, "text": i.exception_text,
                    }
                )
        elif isinstance(i, ins.KeyLost):
            joining.pop(("memory", i.client, False), None)
            client_link = self.client_links.get(i.client)
            if client_link is not None:
                client_link.send({"op": "lost-data", "key": i.key})
        else:  # pragma: no cover - a new instruction type without a dispatcher
            raise TypeError(f"Scheduler cannot dispatch {i!r}")

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
            "clients": len(self.client_links),
        }

