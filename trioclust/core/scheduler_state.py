"""The scheduler's sans-IO state machine: graph and worker events in, instructions out."""

# Theory of operation
# ===================
#
# ``SchedulerState.handle(*events)`` applies each event and returns what the
# runtime must do: ``ComputeTask`` / ``FreeKeys`` to workers, ``KeyInMemory`` /
# ``KeyErred`` / ``KeyLost`` to clients. Nothing here blocks, reads a clock or
# touches a socket, so a recorded list of events replays to the same
# instructions (every walk over a set is ordered; see scheduler_tasks.py).
#
# States of a key
# ---------------
#   released    known but idle: new, cancelled, or kept for lineage
#   waiting     needed; some dependency is not in memory yet
#   queued      ready, has no dependencies, but every worker is saturated
#   no-worker   ready, but no worker is connected
#   processing  sent to ``processing_on``
#   memory      the result sits on the workers in ``who_has``
#   erred       it failed, or a dependency did (``exception_blame`` says which)
#   forgotten   dropped from ``tasks``; seen only in ``transition_log``
#
# Needed or not
# -------------
# A task is *needed* while a client wants it (``who_wants``) or an active
# dependent (waiting/queued/no-worker/processing) still needs its data
# (``waiters``). Everything follows from that one rule:
#   - a needed released task goes to waiting, and pulls its released
#     dependencies to waiting with it (so unwanted dependencies get computed);
#   - an active or in-memory task that stops being needed is released: its
#     worker is told to cancel it, its holders to drop the data (FreeKeys);
#   - a released or erred task that is not needed and has no dependents is
#     forgotten. A released task that still has dependents stays, for
#     *lineage*: if a dependent's result is lost, the dependent is recomputed
#     and pulls this task back to waiting.
#
# Lost data
# ---------
# A key whose last holder leaves (RemoveWorker, MissingData) goes memory ->
# released. Wanting clients get KeyLost; dependents that were processing
# elsewhere are cancelled there (FreeKeys) and wait again; and, because the
# key is still needed, it is recomputed from its dependencies, recursively.
# Scattered data has nothing to recompute from: it errs with ``LostData``.
# Tasks running on a worker that dies unexpectedly count a death
# (``suspicious``); past ``allowed_failures`` they err with ``KilledWorker``.
# "Running" means the worker reported it started them (TaskStarted, sent as
# it hands a task to its threads, so a task in a thread's prefetch queue
# counts too): tasks still waiting there for a thread are innocent. If none
# of its tasks had reported a start (the report may not have left before the
# crash), all of them count, so a task that kills its worker at once still
# ends as KilledWorker.
#
# Placement
# ---------
# A task with dependencies runs where most of its dependencies' bytes are.
# A task without dependencies runs on the least occupied worker, but only
# while that worker runs fewer than ``ceil(nthreads * worker_saturation)``
# (``root_saturation`` if other tasks depend on it, a reduction's leaves,
# and the worker stores more than ``root_memory_fraction`` of its memory);
# otherwise it is queued, by priority, until a worker frees up. A task
# that seceded (TaskSeceded: it waits on tasks it launched) stays processing
# but counts against neither the worker's occupancy nor that limit.
#
# Mechanics
# ---------
# The transition table, its driver and the placement of ready tasks live in
# scheduler_transitions.py; this module turns each event into
# recommendations for it. Placement rules: scheduler_placement.py.
#
# Who is told what
# ----------------
#   clients   KeyInMemory when a wanted key reaches memory (or again when a
#             client asks for a finished key; not to the clients a
#             TaskFinished says were told already), KeyErred when it errs,
#             KeyLost when its result is lost and is being recomputed.
#   workers   ComputeTask with the holders and sizes of every dependency;
#             FreeKeys to cancel a task or to drop data nobody needs, and to
#             drop the record of a task that erred there; AcquireReplicas and
#             CloseWorker when workers retire (see "Retiring workers").
#
# Urgency
# -------
# Every message leaves at once on an idle link; an instruction that is not
# ``urgent`` may wait for its link's next batch instead (comm.linger), so that
# a busy stream of them goes out in fewer writes. It is decided when ``handle``
# ends, from the state the whole pass left: a ComputeTask is urgent unless its
# worker has more tasks than threads, a KeyInMemory unless other tasks are
# still processing (seceded ones count for neither: they wait on results);
# a FreeKeys that only drops data is ``lazy``.
#
# Task reports and results told early
# -----------------------------------
# The runtime hands TaskStarted and TaskFinished to ``report`` as they are
# read; they are handled together, first thing in the next ``handle`` (so a
# round of reads from many workers is one pass, and anything else sees them
# first). The first TaskFinished reported since the last ``handle`` whose
# task is processing on its sender is told to its waiting clients at once:
# ``report`` returns those KeyInMemory instructions (urgent when nothing
# else will be processing) and the event's ``told`` keeps the pass from
# telling them twice. A lone result (a ``submit().result()`` loop) thus
# reaches its client without waiting for the pass.
#
# Retiring workers
# ----------------
# ``workers_to_retire(n)`` picks the n workers holding the least data.
# RetireWorkers asks, for each retiring worker, the remaining workers to copy
# the keys only it holds (AcquireReplicas, round-robin over them, one
# instruction per target); once every copy it waits for is done or failed
# (AddReplicas / ReplicasFailed naming it), or at once when there is nothing
# to copy, the worker is told to close (CloseWorker).
#
# Replicating and rebalancing
# ---------------------------
# Replicate and Rebalance are planned by core/scheduler_replicas.py. The
# copies go out as AcquireReplicas (with no retiring worker); a replica
# dropped by Replicate stops counting at once (FreeKeys to its holder). A
# rebalanced key leaves its old holder only once AddReplicas says the new
# copy is there (``_moving``); a ReplicasFailed forgets the target's moves.

from __future__ import annotations

import itertools
from collections.abc import Iterable

from trioclust.core.events import (
    AddClient,
    AddReplicas,
    AddWorker,
    MissingData,
    NewTask,
    Rebalance,
    ReleaseKeys,
    RemoveClient,
    RemoveWorker,
    ReplicasFailed,
    Replicate,
    RescheduleTask,
    RetireWorkers,
    RetryTasks,
    SchedulerEvent,
    StealLook,
    TaskErred,
    TaskFinished,
    TaskSeceded,
    TaskStarted,
    ThreadsHeld,
    UpdateData,
    UpdateGraph,
    WantKeys,
    WorkerPaused,
)
from trioclust.core.instructions import (
    AcquireReplicas,
    CloseWorker,
    ComputeTask,
    FreeKeys,
    KeyErred,
    KeyInMemory,
    SchedulerInstruction,
)
from trioclust.core.keys import Key, key_str
from trioclust.core.scheduler_graph import link_new_tasks
from trioclust.core.scheduler_placement import unrunnable_reason
from trioclust.core.scheduler_replicas import ReplicaPlan, plan_rebalance, plan_replicate
from trioclust.core.scheduler_tasks import (
    ERRED,
    FORGOTTEN,
    MEMORY,
    PROCESSING,
    RELEASED,
    WAITING,
    Restrictions,
    TaskState,
    WorkerInfo,
)
from trioclust.core.scheduler_transitions import Recs, SchedulerTransitions
from trioclust.errors import FutureCancelledError, KilledWorker, LostData

__all__ = ["SchedulerState"]


def _by_seq(ts: TaskState) -> int:
    return ts.seq


class SchedulerState(SchedulerTransitions):
    """All of the scheduler's decisions, as a state machine with no I/O.

    Args:
        allowed_failures: How many unexpected worker deaths a task may witness
            while running; one more and it errs with ``KilledWorker``.
        worker_saturation: Tasks without dependencies are sent to a worker
            while it runs fewer than ``ceil(nthreads * worker_saturation)`` of
            them; the rest are queued here. ``float("inf")`` never queues.
        root_saturation: The same for root tasks (tasks without dependencies
            that other tasks depend on: a reduction's leaves) on a worker that
            stores more than ``root_memory_fraction`` of its memory limit;
            the smaller of the two applies (see scheduler_placement.py).
        root_memory_fraction: See ``root_saturation``.
        transition_log_length: How many transitions ``transition_log`` keeps.

    Attributes:
        tasks: Every key not forgotten, by key (read-only for the runtime).
        workers: Connected workers, by address (read-only for the runtime).
        clients: Connected clients (read-only for the runtime).
        transition_log: The latest ``(stimulus_id, key, start, finish)``
            transitions, for debugging.
        allowed_failures: As given.
        worker_saturation: As given.
        root_saturation: As given.
        root_memory_fraction: As given.
    """

    # ------------------------------------------------------------- public API

    def handle(self, *events: SchedulerEvent) -> list[SchedulerInstruction]:
        """Apply events in order and return the instructions they lead to.

        Args:
            *events: Scheduler events, as decoded by the runtime.

        Returns:
            The instructions, in the order the runtime should carry them out.
        """
        out: list[SchedulerInstruction] = []
        self._out = out
        self._now = self._clock()
        self._told_early = False
        if self._reports:
            reports, self._reports = self._reports, []
            for report in reports:
                self._dispatch(report)
                self._fill_queue(report.stimulus_id)
        for event in events:
            self._dispatch(event)
            self._fill_queue(event.stimulus_id)
        if events or self._unstarted:
            self._steal(events[-1].stimulus_id if events else "steal")
        self._out = []
        if out:
            self._set_urgency(out)
        return out

    def report(self, event: TaskFinished | TaskStarted) -> list[KeyInMemory]:
        """Keep a task report for the next :meth:`handle`, which handles it
        before its own events; the first result reported since the last
        ``handle`` goes to its waiting clients now (see "Task reports and
        results told early" above).

        Returns:
            KeyInMemory instructions for the clients told early (often none).
        """
        self._reports.append(event)
        if self._told_early or type(event) is not TaskFinished:
            return []
        self._told_early = True
        ws = self.workers.get(event.worker)
        ts = self.tasks.get(event.key)
        if ws is None or ts is None or ts.processing_on is not ws or not ts.who_wants:
            return []
        # once this one is handled, nothing else may be running (seceded tasks
        # wait on results like this one): then send at once
        urgent = self._counts.get(PROCESSING, 0) - self._seceded <= 1
        told = tuple(sorted(ts.who_wants))
        event.told = told
        return [
            KeyInMemory(
                client=client, key=event.key, type_name=event.type_name, value=event.value,
                stimulus_id=event.stimulus_id, urgent=urgent,
            )
            for client in told
        ]

    @property
    def has_reports(self) -> bool:
        """Whether reports wait for the next :meth:`handle`."""
        return bool(self._reports)

    def workers_to_retire(self, n: int) -> tuple[str, ...]:
        """The ``n`` workers to retire when a count is asked for: those holding
        the least data (by bytes, then address), not retiring already."""
        candidates = sorted(
            (ws for ws in self.workers.values() if ws.address not in self._retiring),
            key=lambda ws: (ws.nbytes_stored, ws.address),
        )
        return tuple(ws.address for ws in candidates[: max(n, 0)])

    def wanted_by(self, client: str) -> tuple[Key, ...]:
        """The keys ``client`` holds futures to (``client.restart`` releases them all)."""
        return tuple(self._client_wants.get(client, ()))

    @property
    def retiring(self) -> frozenset[str]:
        """Workers retiring that have not been told to close yet."""
        return frozenset(self._retiring)

    def _set_urgency(self, out: list[SchedulerInstruction]) -> None:
        idle = self._counts.get(PROCESSING, 0) - self._seceded == 0
        workers = self.workers
        for i in out:
            kind = type(i)
            if kind is ComputeTask:
                ws = workers.get(i.worker)  # type: ignore[union-attr]
                i.urgent = ws is None or ws.busy <= ws.nthreads  # type: ignore[union-attr]
            elif kind is KeyInMemory:
                i.urgent = idle  # type: ignore[union-attr]

    def wants(self, client: str, key: Key) -> bool:
        """Whether ``client`` holds futures to ``key`` here (it was not released)."""
        ts = self.tasks.get(key)
        return ts is not None and client in ts.who_wants

    def unrunnable(self, limit: int = 100) -> dict[Key, str]:
        """Tasks waiting as no-worker, oldest first (at most ``limit``), each
        with why: the workers or resources it needs that no worker offers."""
        return {
            key: unrunnable_reason(self.tasks[key])
            for key in itertools.islice(self._unrunnable, limit)
        }

    def count(self, state: str) -> int:
        """How many tasks are in ``state`` (O(1))."""
        return self._counts.get(state, 0)

    def tasks_by_state(self) -> dict[str, int]:
        """How many tasks are in each state (states with none are left out)."""
        return {state: n for state, n in self._counts.items() if n}

    # ------------------------------------------------------------- dispatching

    def _dispatch(self, event: SchedulerEvent) -> None:
        match event:
            case TaskFinished():  # the most frequent first: one isinstance per case
                self._task_finished(event)
            case TaskStarted():
                ts = self.tasks.get(event.key)
                if ts is not None and self._is_processing_on(ts, event.worker):
                    self._task_started(ts)
            case UpdateGraph():
                self._update_graph(event)
            case TaskErred():
                self._task_erred(event)
            case ReleaseKeys():
                self._release_keys(event.client, event.keys, event.stimulus_id)
            case WantKeys():
                self._want_keys(event)
            case AddWorker():
                self._add_worker(event)
            case RemoveWorker():
                self._remove_worker(event.address, event.expected, event.stimulus_id)
            case AddClient():
                self._add_client(event.client)
            case RemoveClient():
                keys = tuple(self._client_wants.get(event.client, ()))
                self._release_keys(event.client, keys, event.stimulus_id)
                self._client_wants.pop(event.client, None)
                self.clients.discard(event.client)
            case UpdateData():
                self._update_data(event)
            case MissingData():
                self._missing_data(event)
            case RescheduleTask():
                ts = self.tasks.get(event.key)
                if ts is not None and self._is_processing_on(ts, event.worker):
                    self._transitions({ts.key: WAITING}, event.stimulus_id)
            case AddReplicas():
                self._add_replicas(event)
                self._finish_moves(event)
                self._replicas_done(event.retiring, event.stimulus_id)
            case ReplicasFailed():
                self._forget_moves(event.worker)
                self._replicas_done(event.retiring, event.stimulus_id)
            case Replicate():
                self._carry_out(
                    plan_replicate(self.tasks, self.workers, event.keys, event.n, event.workers),
                    event.stimulus_id,
                )
            case Rebalance():
                self._carry_out(
                    plan_rebalance(self.tasks, self.workers, event.keys, event.workers),
                    event.stimulus_id,
                )
            case RetireWorkers():
                self._retire_workers(event)
            case TaskSeceded():
                self._task_seceded(event)
            case WorkerPaused():
                self._worker_paused(event)
            case ThreadsHeld():
                self._threads_held(event)
            case RetryTasks():
                self._retry_tasks(event)
            case StealLook():
                self._look_for_stranded(event.stimulus_id)
            case _:  # pragma: no cover - the union is exhaustive
                raise TypeError(f"not a scheduler event: {event!r}")

    # ------------------------------------------------------------ event handlers

    def _add_client(self, client: str) -> None:
        self.clients.add(client)
        self._client_wants.setdefault(client, {})

    def _want(self, ts: TaskState, client: str) -> None:
        ts.who_wants = self._sets.add(ts.who_wants, client)
        self._client_wants[client][ts.key] = None

    def _unknown_key(self, client: str, key: Key, stimulus_id: str) -> None:
        exc = FutureCancelledError(key, "the scheduler does not know this key (it was released)")
        self._out.append(
            KeyErred(
                client=client,
                key=key,
                exception=exc,
                exception_text=str(exc),
                stimulus_id=stimulus_id,
            )
        )

    def _resend(self, ts: TaskState, client: str, stimulus_id: str) -> None:
        """Tell ``client`` again about a key that is already done."""
        if ts.state == MEMORY:
            self._out.append(
                KeyInMemory(
                    client=client, key=ts.key, type_name=ts.type_name, stimulus_id=stimulus_id
                )
            )
        elif ts.state == ERRED:
            self._out.append(self._key_erred(ts, client, stimulus_id))

    def _update_graph(self, event: UpdateGraph) -> None:
        stim = event.stimulus_id
        client = event.client
        self._add_client(client)
        specs = {nt.key: nt for nt in event.tasks}
        new: list[TaskState] = []
        for key, nt in specs.items():
            if key not in self.tasks:
                ts = self._new_task(key, nt.run_spec, nt.priority)
                if nt.workers or nt.resources or nt.retries:
                    self._restrict(ts, nt)
                new.append(ts)
        bad = link_new_tasks(self.tasks, new, specs, self._sets)
        is_new = set(new)
        recs: Recs = {}
        for key in event.wanted:
            wts = self.tasks.get(key)
            if wts is None:
                self._unknown_key(client, key, stim)
                continue
            self._want(wts, client)
            if wts not in is_new:
                self._resend(wts, client, stim)
            if wts.state == RELEASED and wts not in bad:
                recs[key] = WAITING
        if bad:
            self._transitions({ts.key: ERRED for ts in bad}, stim)
        self._transitions(recs, stim)
        # Tasks of this graph that nothing wants and nothing needs.
        unused = {
            ts.key: FORGOTTEN
            for ts in new
            if ts.state in (RELEASED, ERRED)
            and not ts.who_wants
            and not ts.waiters
            and not ts.dependents
        }
        self._transitions(unused, stim)

    @staticmethod
    def _restrict(ts: TaskState, nt: NewTask) -> None:
        """Record a new task's placement restrictions and retries."""
        ts.retries = max(nt.retries, 0)
        if nt.workers or nt.resources:
            ts.restrictions = Restrictions(
                frozenset(nt.workers), loose=nt.allow_other_workers, resources=nt.resources
            )

    def _retry_tasks(self, event: RetryTasks) -> None:
        """Rerun erred keys and the erred keys they depend on (``Future.retry()``)."""
        erred: list[TaskState] = []
        seen: set[TaskState] = set()
        stack = [ts for key in event.keys if (ts := self.tasks.get(key)) is not None]
        while stack:
            ts = stack.pop()
            if ts in seen or ts.state != ERRED:
                continue
            seen.add(ts)
            erred.append(ts)
            stack.extend(ts.dependencies)
        erred.sort(key=_by_seq)
        stim = event.stimulus_id
        self._transitions({ts.key: RELEASED for ts in erred}, stim)
        # dependencies first: each is released before a dependent pulls it in
        self._transitions({ts.key: WAITING for ts in erred if ts.who_wants}, stim)

    def _want_keys(self, event: WantKeys) -> None:
        self._add_client(event.client)
        recs: Recs = {}
        for key in event.keys:
            ts = self.tasks.get(key)
            if ts is None:
                self._unknown_key(event.client, key, event.stimulus_id)
                continue
            self._want(ts, event.client)
            self._resend(ts, event.client, event.stimulus_id)
            if ts.state == RELEASED:
                recs[key] = WAITING
        self._transitions(recs, event.stimulus_id)

    def _release_keys(self, client: str, keys: Iterable[Key], stimulus_id: str) -> None:
        wants = self._client_wants.get(client, {})
        recs: Recs = {}
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or client not in ts.who_wants:
                continue
            ts.who_wants = self._sets.discard(ts.who_wants, client)
            wants.pop(key, None)
            if not ts.who_wants and not ts.waiters:
                rec = self._unneeded(ts)
                if rec:
                    recs[key] = rec
        self._transitions(recs, stimulus_id)

    def _update_data(self, event: UpdateData) -> None:
        stim = event.stimulus_id
        client = event.client
        self._add_client(client)
        for key, holders in event.who_has.items():
            known = tuple(sorted(addr for addr in set(holders) if addr in self.workers))
            ts = self.tasks.get(key)
            if not known:
                exc = LostData(key)
                self._out.append(
                    KeyErred(
                        client=client,
                        key=key,
                        exception=exc,
                        exception_text=str(exc),
                        stimulus_id=stim,
                    )
                )
                continue
            if ts is None:
                ts = self._new_task(key, None, 0, has_run_spec=False)
            self._want(ts, client)
            if ts.state == RELEASED:
                ts.nbytes = event.nbytes.get(key, 0)
                self._scattered_to[key] = known
                self._transitions({key: MEMORY}, stim)
            elif ts.state == MEMORY:
                for addr in known:
                    if addr not in ts.who_has:
                        self._add_holder(ts, self.workers[addr])
                self._resend(ts, client, stim)
            else:
                # The key is being computed (or erred): that outcome stands and
                # reaches this client like any other; drop the scattered copies.
                for addr in known:
                    self._out.append(FreeKeys(worker=addr, keys=(key,), stimulus_id=stim))
                self._resend(ts, client, stim)

    def _task_finished(self, event: TaskFinished) -> None:
        ws = self.workers.get(event.worker)
        if ws is None:
            return  # from a worker that was removed: its data went with it
        ts = self.tasks.get(event.key)
        if self._stolen and self._stale_result(event.key, event.worker):
            ts = None  # a run stolen from it: dropped there
        if ts is not None and ts.processing_on is ws:
            ts.nbytes = event.nbytes
            ts.type_name = event.type_name
            if event.value is not None:
                self._values[ts.key] = event.value
            if event.told:
                self._told[ts.key] = event.told
            self._transitions({ts.key: MEMORY}, event.stimulus_id)
            self._values.pop(ts.key, None)
            self._told.pop(ts.key, None)
        elif ts is not None and ts.state == MEMORY:
            if event.worker not in ts.who_has:
                self._add_holder(ts, ws)  # a second, valid copy
        else:
            # Stale: cancelled, rescheduled or forgotten meanwhile.
            self._out.append(
                FreeKeys(worker=event.worker, keys=(event.key,), stimulus_id=event.stimulus_id)
            )

    def _task_erred(self, event: TaskErred) -> None:
        ts = self.tasks.get(event.key)
        if self._stolen:
            self._stale_result(event.key, event.worker)
        if ts is None or not self._is_processing_on(ts, event.worker):
            return
        if ts.retries > 0:
            self._out.append(
                FreeKeys(worker=event.worker, keys=(ts.key,), stimulus_id=event.stimulus_id)
            )
            self._retry_erred(ts, event.stimulus_id)
            return
        ts.set_exception(event.exception, event.traceback, event.exception_text, ts.key)
        # The worker keeps an error record until told to drop it.
        self._out.append(
            FreeKeys(worker=event.worker, keys=(ts.key,), stimulus_id=event.stimulus_id)
        )
        self._transitions({ts.key: ERRED}, event.stimulus_id)

    def _task_seceded(self, event: TaskSeceded) -> None:
        """The task waits on others now: its thread counts as free (see "Placement")."""
        ts = self.tasks.get(event.key)
        if ts is None or not self._is_processing_on(ts, event.worker):
            return
        ws = ts.processing_on
        assert ws is not None
        if ts.key not in ws.long_running:
            ws.long_running.add(ts.key)
            self._seceded += 1
            self._placement.touch(ws)

    def _missing_data(self, event: MissingData) -> None:
        ts = self.tasks.get(event.key)
        if ts is None or event.errant_worker not in ts.who_has:
            return
        self._remove_holder(ts, event.errant_worker)
        if not ts.who_has:
            self._transitions({ts.key: RELEASED}, event.stimulus_id)

    def _add_replicas(self, event: AddReplicas) -> None:
        ws = self.workers.get(event.worker)
        if ws is None:
            return
        stale = []
        for key in event.keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state == MEMORY:
                if event.worker not in ts.who_has:
                    self._add_holder(ts, ws)
            else:
                stale.append(key)  # released or forgotten meanwhile
        if stale:
            self._out.append(
                FreeKeys(worker=event.worker, keys=tuple(stale), stimulus_id=event.stimulus_id)
            )

    def _carry_out(self, plan: ReplicaPlan, stimulus_id: str) -> None:
        """A replicate or rebalance plan as instructions (see the module's notes)."""
        for worker, keys in plan.drops.items():
            for key in keys:
                self._remove_holder(self.tasks[key], worker)
            self._out.append(FreeKeys(worker=worker, keys=tuple(keys), stimulus_id=stimulus_id))
        self._moving.update(plan.moves)
        for target, who_has in plan.copies.items():
            self._out.append(
                AcquireReplicas(worker=target, who_has=who_has, retiring="", stimulus_id=stimulus_id)
            )

    def _finish_moves(self, event: AddReplicas) -> None:
        """Drop the old copies of the rebalanced keys ``event.worker`` now holds."""
        if not self._moving:
            return
        drops: dict[str, list[Key]] = {}
        for key in event.keys:
            source = self._moving.pop((key, event.worker), None)
            ts = self.tasks.get(key)
            if (
                source is not None and ts is not None and ts.state == MEMORY
                and event.worker in ts.who_has and source in ts.who_has
            ):
                self._remove_holder(ts, source)
                drops.setdefault(source, []).append(key)
        for source, keys in drops.items():
            self._out.append(FreeKeys(worker=source, keys=tuple(keys), stimulus_id=event.stimulus_id))

    def _forget_moves(self, worker: str) -> None:
        for move in [m for m in self._moving if m[1] == worker]:
            del self._moving[move]

    def _retire_workers(self, event: RetireWorkers) -> None:
        stim = event.stimulus_id
        retiring = [
            a for a in dict.fromkeys(event.workers) if a in self.workers and a not in self._retiring
        ]
        remaining = [
            a for a in self.workers if a not in self._retiring and a not in retiring
        ]
        for address in retiring:
            plans: dict[str, dict[Key, tuple[str, ...]]] = {}
            if remaining:
                only_here = sorted(
                    (key for key in self.workers[address].has_what
                    if self.tasks[key].who_has == {address}),
                    key=key_str,
                )
                for i, key in enumerate(only_here):
                    plans.setdefault(remaining[i % len(remaining)], {})[key] = (address,)
            self._retiring[address] = len(plans)
            for target, who_has in plans.items():
                self._out.append(
                    AcquireReplicas(worker=target, who_has=who_has, retiring=address, stimulus_id=stim)
                )
            if not plans:
                self._replicas_done(address, stim, moved=False)

    def _replicas_done(self, address: str, stimulus_id: str, moved: bool = True) -> None:
        """One copy for retiring ``address`` is done (or there was none to make)."""
        if address not in self._retiring:
            return
        left = self._retiring[address] - moved
        if left > 0:
            self._retiring[address] = left
            return
        del self._retiring[address]
        self._out.append(
            CloseWorker(worker=address, reason="retired by the scheduler", stimulus_id=stimulus_id)
        )

    def _add_worker(self, event: AddWorker) -> None:
        stim = event.stimulus_id
        if event.address in self.workers:
            self._remove_worker(event.address, False, stim)
        ws = WorkerInfo(
            event.address,
            event.nthreads,
            name=event.name,
            memory_limit=event.memory_limit,
            worker_saturation=self.worker_saturation,
            resources=event.resources,
            root_saturation=self.root_saturation,
            root_memory_fraction=self.root_memory_fraction,
        )
        self.workers[ws.address] = ws
        self._placement.touch(ws)
        if self._unrunnable:
            self._transitions(dict.fromkeys(self._unrunnable, PROCESSING), stim)

    def _remove_worker(self, address: str, expected: bool, stimulus_id: str) -> None:
        ws = self.workers.pop(address, None)
        if ws is None:
            return
        self._retiring.pop(address, None)
        self._forget_moves(address)
        # Strip its copies first, so nothing rescheduled below counts on them.
        lost: list[TaskState] = []
        for key in ws.has_what:
            ts = self.tasks[key]
            ts.who_has = self._sets.discard(ts.who_has, address)
            if not ts.who_has:
                lost.append(ts)
        ws.has_what.clear()
        ws.nbytes_stored = 0
        recs: Recs = {}
        processing = sorted((self.tasks[key] for key in ws.processing), key=_by_seq)
        blamed = {ts.key for ts in processing if ts.started} or {ts.key for ts in processing}
        for ts in processing:
            if not expected and ts.key in blamed:
                ts.suspicious += 1
                if ts.suspicious > self.allowed_failures:
                    reason = f"it was paused for memory: {ws.paused_reason}" if ws.paused else ""
                    exc = KilledWorker(ts.key, address, self.allowed_failures, reason)
                    ts.set_exception(exc, None, str(exc), ts.key)
                    recs[ts.key] = ERRED
                    continue
            recs[ts.key] = WAITING
        self._transitions(recs, stimulus_id)
        lost.sort(key=_by_seq)
        self._transitions({ts.key: RELEASED for ts in lost}, stimulus_id)

    # ------------------------------------------- paused workers, held threads

    def _worker_paused(self, event: WorkerPaused) -> None:
        ws = self.workers.get(event.worker)
        if ws is None:
            return
        ws.paused = event.paused
        ws.paused_reason = event.reason if event.paused else ""
        self._placement.touch(ws)  # back in the heap when it resumes

    def _threads_held(self, event: ThreadsHeld) -> None:
        """Fewer free threads there; with none, what waits there goes elsewhere."""
        ws = self.workers.get(event.worker)
        if ws is None:
            return
        ws.set_held(event.held)
        self._placement.touch(ws)
        if ws.accepting or not ws.processing:
            return
        # every thread runs a cancelled task: nothing sent there can start
        # before one returns, so it is taken back and placed again
        stim = event.stimulus_id
        waiting = sorted((self.tasks[key] for key in ws.processing), key=_by_seq)
        for ts in waiting:
            self._cancel(ts, stim)
        self._transitions({ts.key: WAITING for ts in waiting}, stim)
