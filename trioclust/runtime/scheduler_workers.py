"""The scheduler's worker side: the handlers of what a worker sends, and
worker membership (registration, removal, heartbeats and ``worker-ttl``).

Theory of operation
-------------------
A worker's link (``Scheduler._serve_worker``) calls the ``_worker_<op>``
method of each message with the link's :class:`_WorkerPeer`. The first
message registers the worker: it is sent the uploaded files and the plugins
ahead of any task, and the core learns of it (``AddWorker``). Every later
message marks the worker seen (``_seen``), which is what ``worker-ttl``
checks (``_check_worker_ttl``). Task reports (``task-started``,
``task-finished``) go to the core's ``report``, which keeps them for one pass
of the state machine once the batches the event loop received at once are
all read (``_report_passes``, woken by ``_reports_received``); any other
message is handled at once, and the kept reports first. A worker leaves
through ``_remove_worker``: when its link ends, or when it sent nothing for
``worker-ttl``. While workers are connected, ``_steal_looks`` asks the core
to look for stranded tasks.

:class:`WorkerHandlers` is a mixin of :class:`~trioclust.runtime.scheduler.Scheduler`;
``_WORKER_HANDLERS`` in runtime/scheduler.py maps each op to its method.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from trioclust.comm import Link, writes_deferred
from trioclust.core import events as ev
from trioclust.protocol import messages as msgs

if TYPE_CHECKING:
    from trioclust.core import instructions as ins
    from trioclust.core.scheduler_state import SchedulerState
    from trioclust.dashboard.task_stream import TaskStream

logger = logging.getLogger("trioclust.scheduler")


class _WorkerPeer:
    """What the scheduler knows of one worker connection."""

    __slots__ = ("address", "link")

    def __init__(self) -> None:
        self.address: str | None = None  # set when it registers
        self.link: Link | None = None


class WorkerHandlers:
    """The Scheduler's worker handlers and worker membership (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Scheduler's

        id: str
        address: str
        state: SchedulerState
        task_stream: TaskStream
        worker_ttl: float
        worker_links: dict[str, Link]
        worker_metrics: dict[str, dict[str, Any]]
        worker_history: deque[tuple[float, str, float, int]]
        uploads: dict[str, msgs.UploadFileWorkerMsg]
        plugins: dict[str, Any]
        worker_plugins: dict[str, msgs.PluginAddMsg]
        nanny_plugins: dict[str, msgs.NannyPluginAddMsg]
        _last_seen: dict[str, float]
        _leaving: set[str]
        _workers_changed: trio.Event
        _reports_due: trio.Event
        _pass_queued: bool

        def _handle(self, *events: Any, moves: list[ins.AcquireReplicas] | None = None) -> None: ...

        def _dispatch_all(
            self, instructions: list[Any], moves: list[ins.AcquireReplicas] | None = None
        ) -> None: ...

        def _plugins_call(self, hook: str, *args: Any, **kwargs: Any) -> None: ...

    # -------------------------------------------------------- registration
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
        interval = state.stranded_after  # scheduler.work-stealing-interval
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

    def _notify_workers_changed(self) -> None:
        self._workers_changed.set()
        self._workers_changed = trio.Event()

    async def wait_for_workers(self, n: int) -> None:
        """Wait until at least ``n`` workers are registered."""
        while len(self.state.workers) < n:
            await self._workers_changed.wait()
