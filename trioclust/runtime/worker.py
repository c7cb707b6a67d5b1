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
"""

from __future__ import annotations

import inspect
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

from trioclust import config
from trioclust.comm import Link
from trioclust.comm import connect as comm_connect
from trioclust.comm import serve as comm_serve
from trioclust.comm.pool import ConnectionPool
from trioclust.core import events as ev
from trioclust.core import instructions as ins
from trioclust.core.memory_policy import (
    MemoryPolicy,
    MemorySample,
    PauseWorker,
    ResumeWorker,
    SpillData,
    TrimMemory,
)
from trioclust.core.worker_state import EXECUTING, WorkerState
from trioclust.errors import CommClosedError, ProtocolError, RemoteError
from trioclust.protocol import Serialized
from trioclust.protocol import messages as msgs
from trioclust.protocol.run_spec import loads_task
from trioclust.protocol.task_spec import substitute
from trioclust.runtime.execution import (
    Failure,
    Success,
    call_function,
    pack_failure,
    pack_success,
    run_sync,
)
from trioclust.runtime.log_capture import server_label
from trioclust.runtime.server import Server
from trioclust.runtime.spill import SpillStore, memory_thresholds, trim_memory
from trioclust.runtime.thread_pool import ThreadPool
from trioclust.transport.addresses import parse_address, parse_host_port, unparse_host_port

if TYPE_CHECKING:
    from trioclust.security import Security

# schemes whose listen address is host:port (the rest, inproc, pick a name)
_HOST_PORT_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")

logger = logging.getLogger("trioclust.worker")

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
    ) -> None:
        super().__init__()
        if nthreads < 1:
            raise ValueError(f"nthreads must be at least 1, got {nthreads}")
        self.scheduler_address = scheduler_address
        parse_address(scheduler_address)  # a malformed address fails here, clearly
        self.nthreads = nthreads
        self.name = name
        self.memory_limit = int(memory_limit or 0)
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
        self.paused = False
        # held threads: jobs of thread tasks by key, and those cancelled while running
        self._thread_jobs: dict[str, _ThreadJob] = {}
        self._held: set[_ThreadJob] = set()
        self._held_reported = 0
        self._prefetch = config.get_int("worker.prefetch-per-thread")
        self._prefetch_short = config.get_int("worker.prefetch-short-tasks")
        self._prefetch_duration = config.get_float("worker.prefetch-duration")
        self.state = self._new_state()
        self._generation = 0
        self._inline: dict[str, Serialized] = {}
        self._cancel_scopes: dict[str, trio.CancelScope] = {}
        self._scheduler_link: Link | None = None
        self._nursery: trio.Nursery | None = None
        self._pool: ConnectionPool | None = None

    def _new_state(self) -> WorkerState:
        return WorkerState(
            address=self.address,
            nthreads=self._slots(),
            max_concurrent_gathers=config.get_int("worker.max-concurrent-gathers"),
            transition_log_length=config.get_int("worker.transition-log-length"),
            validate=bool(config.get("worker.validate")),
            data=self._store,
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
    def data(self) -> MutableMapping[str, Any]:
        """The results this worker holds, by key (those spilled to disk too)."""
        return self.state.data

    def story(self, *keys: str) -> list[tuple[str, str, str, str, float]]:
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
                self._threads.start()
                self._pool = ConnectionPool(nursery, role="worker", name=self.name, security=self.security)
                await nursery.start(self._scheduler_sessions, comm)
                nursery.start_soon(self._heartbeat)
                if self.memory_limit:
                    nursery.start_soon(self._monitor_memory)
                self.status = "running"
                logger.info(
                    "Worker %s at %s registered with %s", self.name, self.address, self.scheduler_address
                )
                task_status.started(self)
                await self._close_requested.wait()
                await self._leave_scheduler()
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
                },
                name=f"worker {self.address} -> scheduler",
            )
            self._scheduler_link = link
            async with trio.open_nursery() as nursery:
                await nursery.start(link.run)
                try:
                    await link.request(
                        "register-worker", address=self.address, nthreads=self.nthreads,
                        name=self.name, memory_limit=self.memory_limit, metrics=self._metrics(),
                        pid=os.getpid(), stimulus_id=f"register-worker-{time.time()}",
                    )
                except (OSError, ProtocolError) as exc:  # CommClosedError is an OSError
                    if first:
                        raise
                    logger.warning("Worker %s could not register again: %s", self.name, exc)
                    await link.aclose()
                else:
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
        for job in self._thread_jobs.values():
            if job.cancel():  # still running: it holds its thread until it returns
                self._held.add(job)
        self._thread_jobs.clear()
        self._held_reported = 0
        if self._store is not None:
            self._store.clear()
        self._memory_policy = MemoryPolicy(self.memory_limit, memory_thresholds())
        self.paused = False
        self.state = self._new_state()

    async def _shutdown(self) -> None:
        self.status = "closing"
        await self._threads.aclose(config.get_float("runtime.close-timeout"))
        self.state.data.clear()
        if self._store is not None:
            self._store.close()
        self.status = "closed"
        self._closed.set()
        logger.info("Worker %s closed", self.name or self.address)

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(self.heartbeat_interval)
            self._send_heartbeat()

    def _send_heartbeat(self) -> None:
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
        return {
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
        while True:
            await trio.sleep(self._monitor_interval)
            self._check_memory()

    def _check_memory(self) -> None:
        """One turn of the memory monitor (core/memory_policy.py decides)."""
        spilled_before = self._store.spilled_bytes if self._store is not None else 0
        for _ in range(2):  # after a trim or a spill, measure again at once
            again = False
            for action in self._memory_policy.worker_sample(self._memory_sample()):
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
                stimulus_id=msg["stimulus_id"],
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

    async def _on_run(self, msg: msgs.RunMsg) -> Any:
        """``client.run``: call a function here, in the event loop (like dask)."""
        return await call_function(msg, self, ("dask_worker", "worker"))

    # ------------------------------------------------- peer/client messages
    async def _handle_peer(self, comm: Any) -> None:
        link = Link(
            comm,
            {"get-data": self._on_get_data, "update-data": self._on_update_data},
            name=f"worker {self.address} <- {comm.peer_address}",
        )
        await link.run()

    def _on_get_data(self, msg: msgs.GetDataMsg) -> msgs.GetDataReply:
        data = self.state.data
        found = {k: data[k] for k in msg["keys"] if k in data}
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
            self._send(msg, urgent=i.urgent)
        elif isinstance(i, ins.SendTaskErred):
            erred: msgs.TaskErredMsg = {
                "op": "task-erred", "key": i.key, "exception": i.exception,
                "traceback": i.traceback, "exception_text": i.exception_text,
                "stimulus_id": i.stimulus_id,
            }
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
        elif isinstance(i, ins.SendReschedule):
            reschedule: msgs.RescheduleMsg = {
                "op": "reschedule", "key": i.key, "stimulus_id": i.stimulus_id
            }
            self._send(reschedule)
        else:  # pragma: no cover - a new instruction type without a dispatcher
            raise TypeError(f"Worker cannot dispatch {i!r}")

    # ----------------------------------------------------------- execution
    def _execute(self, key: str, stimulus_id: str) -> None:
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
        if inspect.iscoroutinefunction(fn):
            nursery = self._nursery
            assert nursery is not None

            def start() -> None:
                nursery.start_soon(self._run_coroutine, key, generation, fn, args, kwargs)

        else:
            limit = self.inline_limit
            job = _ThreadJob()
            self._thread_jobs[key] = job

            def run() -> Any:
                if not job.begin():
                    return _SKIPPED
                return run_sync(fn, args, kwargs, limit)

            def start() -> None:
                self._threads.submit(run, lambda outcome: self._thread_done(key, generation, job, outcome))

        # the code starts once the scheduler can know that it started: a task that
        # kills this worker is then blamed (with any queued behind it in its
        # thread), and not the tasks still waiting here for a thread
        started: msgs.TaskStartedMsg = {"op": "task-started", "key": key, "stimulus_id": stimulus_id}
        self._send(started, on_written=start)

    async def _run_coroutine(
        self, key: str, generation: int, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        with trio.CancelScope() as scope:
            self._cancel_scopes[key] = scope
            try:
                value = await fn(*args, **kwargs)
            except Exception as exc:
                outcome: Success | Failure = pack_failure(exc)
            else:
                outcome = pack_success(value, self.inline_limit)
        if self._cancel_scopes.get(key) is scope:
            del self._cancel_scopes[key]
        if scope.cancelled_caught:
            # only CancelExecute cancels this scope: the core drops the outcome
            outcome = pack_failure(RuntimeError(f"task {key!r} was cancelled while running"))
        self._finish(key, generation, outcome)

    def _thread_done(self, key: str, generation: int, job: _ThreadJob, outcome: Any) -> None:
        if self._thread_jobs.get(key) is job:
            del self._thread_jobs[key]
        if job in self._held:
            self._held.discard(job)
            self._report_held(f"thread-returned-{key}")
        if outcome is _SKIPPED:
            ts = self.state.tasks.get(key)
            if generation == self._generation and ts is not None and ts.state == EXECUTING:
                self._execute(key, f"execute-again-{key}")  # asked for again meanwhile
                return
            outcome = pack_failure(RuntimeError(f"task {key!r} was cancelled before it started"))
        self._finish(key, generation, outcome)

    def _finish(self, key: str, generation: int, outcome: Success | Failure) -> None:
        if generation != self._generation:
            return  # the state it belonged to was reset
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
        if store is not None:
            store.drop_expected(key)  # not stored after all (cancelled meanwhile)
            if isinstance(outcome, Success) and outcome.nbytes * 100 >= self.memory_limit:
                # a big result: measure now rather than at the next tick, as
                # tasks that make such results quickly outrun the monitor
                self._check_memory()

    # ------------------------------------------------------------- gathers
    async def _fetch(self, peer: str, keys: list[str]) -> tuple[dict[str, Any], list[str], dict[str, int]]:
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
        data: dict[str, Any] = {}
        nbytes: dict[str, int] = {}
        for k, v in reply["data"].items():
            if isinstance(v, Serialized):
                nbytes[k] = v.nbytes
                v = v.deserialize()
            data[k] = v
        return data, list(reply.get("missing") or ()), nbytes

    def _expect_sizes(self, nbytes: dict[str, int]) -> None:
        store = self._store
        if store is not None:
            for key, n in nbytes.items():
                if n:
                    store.expect_size(key, n)

    async def _gather(self, peer: str, keys: tuple[str, ...], generation: int) -> None:
        try:
            data, _, nbytes = await self._fetch(peer, list(keys))
            self._expect_sizes(nbytes)
            event: Any = ev.GatherSucceeded(peer=peer, data=data, stimulus_id=f"gather-{peer}")
        except (OSError, CommClosedError, ProtocolError, RemoteError) as exc:
            logger.warning("Worker %s could not gather %d keys from %s: %s", self.name, len(keys), peer, exc)
            event = ev.GatherFailed(peer=peer, keys=keys, reason=str(exc), stimulus_id=f"gather-failed-{peer}")
        if generation == self._generation:
            self._handle(event)

    async def _on_acquire_replicas(self, msg: msgs.AcquireReplicasMsg) -> msgs.AcquireReplicasReply:
        """Copy keys from the workers holding them (another worker is retiring)."""
        by_peer: dict[str, list[str]] = {}
        for key, holders in msg["who_has"].items():
            if holders:
                by_peer.setdefault(holders[0], []).append(key)
        got: list[str] = []
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

    def _on_close_request(self, msg: msgs.CloseMsg) -> None:
        """The scheduler retires this worker: stop, and say so (a nanny will not restart it)."""
        self.close_reason = msg["reason"] or "the scheduler asked it to close"
        logger.info("Worker %s closes: %s", self.name, self.close_reason)
        self._request_close()
