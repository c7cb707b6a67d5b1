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

import inspect
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
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
from trioclust.core.worker_state import WorkerState
from trioclust.errors import CommClosedError, ProtocolError, RemoteError
from trioclust.protocol import Serialized
from trioclust.protocol import messages as msgs
from trioclust.protocol.run_spec import loads_task
from trioclust.protocol.task_spec import substitute
from trioclust.runtime import profiling
from trioclust.runtime.execution import (
    Failure,
    Success,
    call_function,
    pack_failure,
    pack_success,
    run_sync,
)
from trioclust.runtime.log_capture import process_logs, server_label
from trioclust.runtime.resources import parse_resources
from trioclust.runtime.server import Server
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
        self._prefetch = config.get_int("worker.prefetch-per-thread")
        self._prefetch_short = config.get_int("worker.prefetch-short-tasks")
        self._prefetch_duration = config.get_float("worker.prefetch-duration")
        self.state = self._new_state()
        self._generation = 0
        self._inline: dict[str, Serialized] = {}
        # (start, stop, thread, transfers) of runs whose report has not left yet
        self._timings: dict[str, tuple[float, float, int, list[list[Any]] | None]] = {}
        # dependency key -> [start, stop, source, nbytes] of its fetch (worker clock)
        self._transfers: dict[str, list[Any]] = {}
        self.clock = ClockOffset()
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
        return self.nthreads * (1 + queue)

    def __repr__(self) -> str:
        return (
            f"<Worker {self.address or '(not started)'!r} name={self.name!r} status={self.status} "
            f"threads={self.nthreads} stored={len(self.state.data)}>"
        )

    @property
    def data(self) -> dict[str, Any]:
        """The results this worker holds, by key."""
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
                self.state = self._new_state()
                if self.name is None:
                    self.name = self.address
                self._threads.start()
                self._pool = ConnectionPool(nursery, role="worker", name=self.name, security=self.security)
                await nursery.start(self._scheduler_sessions, comm)
                nursery.start_soon(self._heartbeat)
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
                    "get-logs": self._on_get_logs,
                    "profile": self._on_profile,
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
        self.state = self._new_state()

    async def _shutdown(self) -> None:
        self.status = "closing"
        await self._threads.aclose(config.get_float("runtime.close-timeout"))
        self.state.data.clear()
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

    def _metrics(self) -> dict[str, Any]:
        try:
            rss = self._process.memory_info().rss
        except psutil.Error:
            rss = 0
        try:
            cpu = self._process.cpu_percent()  # since the last call: no waiting
        except psutil.Error:
            cpu = 0.0
        return {
            "cpu": cpu,
            "memory": rss,
            "executing": len(self.state.executing),
            "stored": len(self.state.data),
            "time": time.time(),
        }

    # -------------------------------------------------- scheduler messages
    def _on_compute_task(self, msg: msgs.ComputeTaskMsg) -> None:
        who_has = msg.get("who_has")
        self._handle(
            ev.ComputeRequested(
                key=msg["key"], run_spec=msg["run_spec"],
                who_has={k: tuple(v) for k, v in who_has.items()} if who_has else {},
                nbytes=msg.get("nbytes") or {}, priority=msg["priority"],
                resources=msg.get("resources"), stimulus_id=msg["stimulus_id"],
            )
        )

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
        self._handle(ev.DataUpdated(data=values, nbytes=nbytes, stimulus_id=f"update-data-{time.time()}"))
        return {"nbytes": nbytes}

    # ------------------------------------------------------------ the core
    def _handle(self, *events: Any) -> None:
        for instruction in self.state.handle(*events):
            self._dispatch(instruction)

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

            def start() -> None:
                self._threads.submit(
                    lambda: _run_timed(fn, args, kwargs, limit),
                    lambda timed: self._finish(key, generation, timed[0], timed[1:], transfers),
                )

        # the code starts once the scheduler can know that it started: a task that
        # kills this worker is then blamed (with any queued behind it in its
        # thread), and not the tasks still waiting here for a thread
        started: msgs.TaskStartedMsg = {"op": "task-started", "key": key, "stimulus_id": stimulus_id}
        self._send(started, on_written=start)

    async def _run_coroutine(
        self, key: str, generation: int, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
        transfers: list[list[Any]] | None = None,
    ) -> None:
        start = time.time()
        with trio.CancelScope() as scope:
            self._cancel_scopes[key] = scope
            try:
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

    def _finish(
        self, key: str, generation: int, outcome: Success | Failure,
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
        if isinstance(outcome, Success):
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

    async def _gather(self, peer: str, keys: tuple[str, ...], generation: int) -> None:
        try:
            start = time.time()
            data, _, nbytes = await self._fetch(peer, list(keys))
            if generation == self._generation:
                self._note_transfers(start, time.time(), peer, nbytes, data)
            event: Any = ev.GatherSucceeded(peer=peer, data=data, stimulus_id=f"gather-{peer}")
        except (OSError, CommClosedError, ProtocolError, RemoteError) as exc:
            logger.warning("Worker %s could not gather %d keys from %s: %s", self.name, len(keys), peer, exc)
            event = ev.GatherFailed(peer=peer, keys=keys, reason=str(exc), stimulus_id=f"gather-failed-{peer}")
        if generation == self._generation:
            self._handle(event)

    def _note_transfers(
        self, start: float, stop: float, peer: str, nbytes: dict[str, int], data: dict[str, Any]
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


def _run_timed(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], inline_limit: int
) -> tuple[Success | Failure, float, float, int]:
    """On a worker thread: run the task, and say when and on which thread."""
    start = time.time()
    outcome = run_sync(fn, args, kwargs, inline_limit)
    return outcome, start, time.time(), threading.get_ident()
