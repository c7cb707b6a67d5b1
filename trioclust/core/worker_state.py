"""The worker's sans-IO state machine: scheduler and thread events in, instructions out."""

# Theory of operation
# ===================
#
# ``WorkerState.handle(*events)`` applies events from the scheduler
# (ComputeRequested, FreeRequested, DataUpdated), from its own threads
# (ExecuteSucceeded, ExecuteFailed) and from its peers (GatherSucceeded,
# GatherFailed), and from the runtime (SlotsChanged: how many tasks its
# threads take at once), then decides what to start: ``Execute`` while a slot is
# free, ``Gather`` while a peer and a gather slot are free. Deciding only
# after the whole batch is applied means a batch of requests starts in
# priority order. Nothing here blocks or reads a clock.
#
# Records
# -------
# ``tasks`` holds one ``WorkerTask`` per key this worker deals with;
# worker_tasks.py defines the record and lists the states it can be in.
#
# Requested or fetched
# --------------------
# ``requested`` marks keys the scheduler asked this worker to compute (or
# scattered here): their results are reported and kept until FreeRequested.
# Other records are dependencies fetched for local tasks (or a cancelled
# computation still useful to one); they are dropped as soon as no local
# waiting, ready or executing task needs them, without telling anyone.
#
# Fetching
# --------
# Dependencies to fetch are grouped by peer: each key goes to the holder that
# has the most of the keys wanted right now (ties: the peer used least
# recently). At most one Gather is in flight per peer and at most
# ``max_concurrent_gathers`` in all. A key a peer does not have (or a peer
# that fails) is reported with SendMissingData and fetched from another
# holder; when none is left, every local task that needed it is handed back
# with SendReschedule and dropped.
#
# Seceded tasks
# -------------
# A task that waits on other tasks (``secede()``, ``worker_client``) leaves
# its slot: Seceded moves its key into ``long_running``, which ``executing``
# still holds but the slot count leaves out, so the next ready task starts,
# and SendLongRunning tells the scheduler, which stops counting it against
# this worker's threads. Its outcome comes back like any other.
#
# Resources
# ---------
# A worker started with ``resources={"GPU": 2}`` runs a task that asks for
# some only while that much is free (worker_resources.py).
#
# Mechanics
# ---------
# As in the scheduler, ``_TRANSITIONS`` maps (start, finish) to one method
# that changes one record and returns recommendations; ``_transitions``
# follows them first-in first-out until none is left, logging each change of
# state (story.py). A recommendation with no table entry for the record's
# current state is dropped when ``_STALE`` lists the pair (stale by design);
# under ``validate`` any other missing pair raises ``InvalidTransition``.

from __future__ import annotations

import heapq
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, MutableMapping

from trioclust.core.events import (
    ComputeRequested,
    DataUpdated,
    ExecuteFailed,
    ExecuteSucceeded,
    FreeRequested,
    GatherFailed,
    GatherSucceeded,
    PauseChanged,
    Seceded,
    SlotsChanged,
    WorkerEvent,
)
from trioclust.core.instructions import (
    CancelExecute,
    Execute,
    Gather,
    SendLongRunning,
    SendMissingData,
    SendReschedule,
    SendTaskErred,
    SendTaskFinished,
    WorkerInstruction,
)
from trioclust.core.keys import Key
from trioclust.core.story import InvalidTransition, Story, StoryEntry, story
from trioclust.core.worker_resources import ResourceAccounting
from trioclust.core.worker_tasks import (
    CANCELLED,
    ERROR,
    EXECUTING,
    FETCH,
    FLIGHT,
    FORGOTTEN,
    MEMORY,
    READY,
    RELEASED,
    WAITING,
    WorkerTask,
)

__all__ = ["WorkerState", "WorkerTask"]

Recs = dict[Key, str]

#: (start, finish) pairs the table lacks because a recommendation for them is
#: stale by design; the driver drops them. Any other missing pair is a bug.
_STALE: frozenset[tuple[str, str]] = frozenset()


class WorkerState(ResourceAccounting):
    """All of a worker's decisions, as a state machine with no I/O.

    Args:
        address: This worker's own address (it never fetches from itself).
        nthreads: How many tasks run at once (``Execute`` instructions not yet
            answered): the runtime's threads, and the queue it keeps for them.
            ``SlotsChanged`` changes it.
        max_concurrent_gathers: How many Gather requests may be in flight.
        resources: What this worker has of each resource (``{"GPU": 2}``).
        transition_log_length: How many transitions ``transition_log`` keeps.
        data: The mapping to keep values in (a dict when None; the runtime
            passes its spill store).

    Attributes:
        paused: Set by ``PauseChanged``: while paused no task starts and no
            dependency is fetched (the memory monitor pauses the worker).
        data: The values held here, by key. ``Execute`` reads a task's inputs
            from it; ``GatherSucceeded``, ``ExecuteSucceeded`` and
            ``DataUpdated`` fill it.
        tasks: Every record, by key.
        executing: Keys whose thread is running, cancelled ones included (a
            thread is busy until it returns).
        in_flight: The keys of the one Gather in flight to each peer.
        transition_log: The latest ``(stimulus_id, key, start, finish)``
            transitions, for debugging.
    """

    def __init__(
        self,
        *,
        address: str,
        nthreads: int,
        max_concurrent_gathers: int = 16,
        transition_log_length: int = 100_000,
        validate: bool = False,
        clock: Callable[[], float] = time.time,
        data: MutableMapping[Key, object] | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        if nthreads < 1:
            raise ValueError(f"nthreads must be >= 1, got {nthreads!r}")
        if max_concurrent_gathers < 1:
            raise ValueError(f"max_concurrent_gathers must be >= 1, got {max_concurrent_gathers!r}")
        self.address = address
        self.nthreads = nthreads
        self.max_concurrent_gathers = max_concurrent_gathers
        self.data: MutableMapping[Key, object] = {} if data is None else data
        self.paused = False
        self.tasks: dict[Key, WorkerTask] = {}
        self.executing: set[Key] = set()
        self.long_running: set[Key] = set()
        self.in_flight: dict[str, tuple[Key, ...]] = {}
        self.validate = validate
        self.transition_log: deque[StoryEntry] = deque(maxlen=transition_log_length)
        self._clock = clock
        self._now = 0.0  # the clock's reading for the current handle() call
        self._ready: list[tuple[int, int, Key]] = []
        #: what this worker has of each resource, and what is free now
        self.total_resources: dict[str, float] = dict(resources) if resources else {}
        self.available_resources: dict[str, float] = dict(self.total_resources)
        # ready tasks that need resources, and what each running one holds
        self._constrained: list[tuple[int, int, Key]] = []
        self._holding: dict[Key, Mapping[str, float]] = {}
        self._fetch: dict[Key, None] = {}
        self._peer_used: dict[str, int] = {}
        self._stamp = 0
        self._seq = 0
        self._out: list[WorkerInstruction] = []

    # ------------------------------------------------------------- public API

    def handle(self, *events: WorkerEvent) -> list[WorkerInstruction]:
        """Apply events in order, then start what can start.

        Args:
            *events: Worker events, as decoded (or produced) by the runtime.

        Returns:
            The instructions, in the order the runtime should carry them out.
        """
        out: list[WorkerInstruction] = []
        self._out = out
        self._now = self._clock()
        stimulus_id = ""
        for event in events:
            self._dispatch(event)
            stimulus_id = event.stimulus_id
        self._ensure_computing(stimulus_id)
        self._ensure_communicating(stimulus_id)
        self._out = []
        if len(self.executing) > len(self.long_running):
            # more results follow soon (not from seceded tasks, which wait on
            # results): these may wait for the link's next batch
            for i in out:
                if type(i) is SendTaskFinished:
                    i.urgent = False
        return out

    def tasks_by_state(self) -> dict[str, int]:
        """How many records are in each state (states with none are left out)."""
        return dict(Counter(ts.state for ts in self.tasks.values()))

    def story(self, *keys: Key) -> Story:
        """The recorded transitions of ``keys``, oldest first: tuples of
        ``(key, start, finish, stimulus_id, time)``."""
        return story(self.transition_log, keys)

    # ------------------------------------------------------------ event handlers

    def _dispatch(self, event: WorkerEvent) -> None:
        match event:
            case ComputeRequested():
                self._compute_requested(event)
            case ExecuteSucceeded():
                self._execute_succeeded(event)
            case ExecuteFailed():
                self._execute_failed(event)
            case GatherSucceeded():
                self._gather_succeeded(event)
            case GatherFailed():
                self._gather_failed(event)
            case FreeRequested():
                self._free_requested(event)
            case DataUpdated():
                self._data_updated(event)
            case Seceded():
                self._seceded(event)
            case SlotsChanged():
                if event.slots < 1:
                    raise ValueError(f"slots must be >= 1, got {event.slots!r}")
                self.nthreads = event.slots  # more start below, fewer as tasks end
            case PauseChanged():
                self.paused = event.paused
            case _:  # pragma: no cover - the union is exhaustive
                raise TypeError(f"not a worker event: {event!r}")

    def _compute_requested(self, event: ComputeRequested) -> None:
        stim = event.stimulus_id
        key = event.key
        ts = self.tasks.get(key)
        if ts is not None:
            state = ts.state
            if state == MEMORY:
                ts.requested = True
                self._out.append(
                    SendTaskFinished(
                        key=key, nbytes=ts.nbytes, type_name=ts.type_name, stimulus_id=stim
                    )
                )
                return
            if state in (WAITING, READY, EXECUTING):
                return
            if state == FLIGHT or state == CANCELLED:
                # The value is on its way (or the thread still runs): use it.
                ts.requested = True
                ts.run_spec = event.run_spec
                ts.priority = event.priority
                if state == CANCELLED and ts.previous is not None:
                    self._transitions({key: ts.previous}, stim)
                return
        # Every dependency must be here, on its way, or held by a peer.
        for dep_key, holders in event.who_has.items():
            dts = self.tasks.get(dep_key)
            if dts is not None and dts.state not in (ERROR, RELEASED):
                continue
            if not any(h != self.address for h in holders):
                if self.address in holders:
                    self._out.append(
                        SendMissingData(key=dep_key, errant_worker=self.address, stimulus_id=stim)
                    )
                self._out.append(SendReschedule(key=key, stimulus_id=stim))
                return
        if ts is not None:
            self._transitions({key: RELEASED if ts.state == FETCH else FORGOTTEN}, stim)
        ts = self.tasks.get(key) or self._new(key, event.priority)
        ts.run_spec = event.run_spec
        ts.priority = event.priority
        ts.resources = event.resources or None
        ts.requested = True
        recs: Recs = {}
        for dep_key, holders in event.who_has.items():
            others = [h for h in dict.fromkeys(holders) if h != self.address]
            dts = self.tasks.get(dep_key)
            if dts is not None and dts.state == ERROR:
                self._transitions({dep_key: FORGOTTEN}, stim)
                dts = None
            if dts is None:
                dts = self._new(dep_key, event.priority)
                dts.nbytes = event.nbytes.get(dep_key, 0)
                dts.who_has = others
                recs[dep_key] = FETCH
            else:
                dts.who_has.extend(h for h in others if h not in dts.who_has)
                if dts.state == CANCELLED and dts.previous == FLIGHT:
                    recs[dep_key] = FLIGHT
            ts.dependencies[dts] = None
            dts.dependents[ts] = None
            if dts.state != MEMORY:
                ts.waiting_for_data.add(dts)
        recs[key] = WAITING if ts.waiting_for_data else READY
        self._transitions(recs, stim)

    def _seceded(self, event: Seceded) -> None:
        """A running task left its slot (see "Seceded tasks" above)."""
        key = event.key
        ts = self.tasks.get(key)
        if ts is None or ts.state != EXECUTING or key in self.long_running:
            return
        self.long_running.add(key)
        self._out.append(SendLongRunning(key=key, stimulus_id=event.stimulus_id))

    def _execute_succeeded(self, event: ExecuteSucceeded) -> None:
        key = event.key
        self.executing.discard(key)
        self.long_running.discard(key)
        if self._holding:
            self._release_resources(key)
        ts = self.tasks.get(key)
        if ts is None:
            return
        if ts.state == EXECUTING or (ts.state == CANCELLED and ts.previous == EXECUTING):
            if ts.state == CANCELLED and not ts.dependents:
                self._transitions({key: FORGOTTEN}, event.stimulus_id)
                return
            self.data[key] = event.value
            ts.nbytes = event.nbytes
            ts.type_name = event.type_name
            if ts.requested:
                self._out.append(
                    SendTaskFinished(
                        key=key,
                        nbytes=event.nbytes,
                        type_name=event.type_name,
                        stimulus_id=event.stimulus_id,
                    )
                )
            self._transitions({key: MEMORY}, event.stimulus_id)

    def _execute_failed(self, event: ExecuteFailed) -> None:
        key = event.key
        self.executing.discard(key)
        self.long_running.discard(key)
        if self._holding:
            self._release_resources(key)
        ts = self.tasks.get(key)
        if ts is None:
            return
        if ts.state == EXECUTING:
            ts.exception = event.exception
            ts.traceback = event.traceback
            ts.exception_text = event.exception_text
            self._transitions({key: ERROR}, event.stimulus_id)
        elif ts.state == CANCELLED and ts.previous == EXECUTING:
            # A local task may still need it: get it from a peer if one has it.
            finish = FETCH if ts.dependents and ts.who_has else FORGOTTEN
            self._transitions({key: finish}, event.stimulus_id)

    def _gather_succeeded(self, event: GatherSucceeded) -> None:
        stim = event.stimulus_id
        peer = event.peer
        for key in self.in_flight.pop(peer, ()):
            ts = self.tasks.get(key)
            if ts is None:
                continue
            if key not in event.data:
                self._missing(ts, peer, stim)
            elif ts.state == FLIGHT:
                self.data[key] = event.data[key]
                if ts.requested:
                    self._out.append(
                        SendTaskFinished(
                            key=key, nbytes=ts.nbytes, type_name=ts.type_name, stimulus_id=stim
                        )
                    )
                self._transitions({key: MEMORY}, stim)
            elif ts.state == CANCELLED and ts.previous == FLIGHT:
                self._transitions({key: FORGOTTEN}, stim)

    def _gather_failed(self, event: GatherFailed) -> None:
        stim = event.stimulus_id
        peer = event.peer
        for key in self.in_flight.pop(peer, None) or event.keys:
            ts = self.tasks.get(key)
            if ts is not None:
                self._missing(ts, peer, stim)
        # Do not count on that peer for anything else we are about to fetch.
        recs: Recs = {}
        for ts in self.tasks.values():
            if peer in ts.who_has:
                ts.who_has.remove(peer)
                if not ts.who_has and ts.state == FETCH:
                    recs[ts.key] = FORGOTTEN
        self._transitions(recs, stim)

    def _missing(self, ts: WorkerTask, peer: str, stimulus_id: str) -> None:
        """``peer`` did not deliver ``ts``, which was in flight from it."""
        if ts.state != FLIGHT and ts.state != CANCELLED:
            return  # arrived some other way meanwhile
        self._out.append(SendMissingData(key=ts.key, errant_worker=peer, stimulus_id=stimulus_id))
        if peer in ts.who_has:
            ts.who_has.remove(peer)
        if ts.state == CANCELLED:
            finish = FORGOTTEN
        elif ts.who_has:
            finish = FETCH
        else:
            if ts.requested:
                self._out.append(SendReschedule(key=ts.key, stimulus_id=stimulus_id))
            finish = FORGOTTEN
        self._transitions({ts.key: finish}, stimulus_id)

    def _free_requested(self, event: FreeRequested) -> None:
        recs: Recs = {}
        for key in event.keys:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            ts.requested = False
            state = ts.state
            if state == EXECUTING:
                recs[key] = CANCELLED
            elif state in (WAITING, READY, ERROR, RELEASED):
                recs[key] = FORGOTTEN
            else:
                rec = self._unneeded(ts)
                if rec:
                    recs[key] = rec
        self._transitions(recs, event.stimulus_id)

    def _data_updated(self, event: DataUpdated) -> None:
        recs: Recs = {}
        for key, value in event.data.items():
            self.data[key] = value
            ts = self.tasks.get(key) or self._new(key, 0)
            ts.requested = True
            ts.nbytes = event.nbytes.get(key, ts.nbytes)
            if ts.state != MEMORY:
                recs[key] = MEMORY
        self._transitions(recs, event.stimulus_id)

    # ------------------------------------------------------- starting things

    def _ensure_computing(self, stimulus_id: str) -> None:
        if self.paused:
            return
        if self._constrained:
            self._ensure_computing_constrained(stimulus_id)
            return
        ready = self._ready
        while ready and len(self.executing) - len(self.long_running) < self.nthreads:
            key = heapq.heappop(ready)[2]
            ts = self.tasks.get(key)
            if ts is not None and ts.state == READY:
                self._transitions({key: EXECUTING}, stimulus_id)

    def _ensure_communicating(self, stimulus_id: str) -> None:
        if not self._fetch or len(self.in_flight) >= self.max_concurrent_gathers or self.paused:
            return
        busy = self.in_flight
        tasks = self.tasks
        counts: dict[str, int] = {}
        for key in self._fetch:
            for peer in tasks[key].who_has:
                if peer not in busy:
                    counts[peer] = counts.get(peer, 0) + 1
        if not counts:
            return
        used = self._peer_used
        groups: dict[str, list[Key]] = {}
        for key in self._fetch:
            best: tuple[int, int, str] | None = None
            for peer in tasks[key].who_has:
                if peer not in busy:
                    rank = (-counts[peer], used.get(peer, 0), peer)
                    if best is None or rank < best:
                        best = rank
            if best is not None:
                groups.setdefault(best[2], []).append(key)
        for peer, keys in groups.items():
            if len(busy) >= self.max_concurrent_gathers:
                break
            self._stamp += 1
            used[peer] = self._stamp
            busy[peer] = tuple(keys)
            for key in keys:
                tasks[key].peer = peer
            self._transitions(dict.fromkeys(keys, FLIGHT), stimulus_id)
            self._out.append(Gather(peer=peer, keys=tuple(keys), stimulus_id=stimulus_id))

    # --------------------------------------------------------------- the driver

    def _transitions(self, recs: Recs, stimulus_id: str) -> None:
        """Carry out recommendations, first in first out, until none is left."""
        pending = deque(recs.items())
        tasks = self.tasks
        log = self.transition_log
        now = self._now
        while pending:
            key, finish = pending.popleft()
            ts = tasks.get(key)
            if ts is None:
                continue
            start = ts.state
            method = self._TRANSITIONS.get((start, finish))
            if method is None:
                if self.validate and (start, finish) not in _STALE:
                    raise InvalidTransition(key, start, finish, stimulus_id, self.story(key))
                continue  # made stale by a later change: see _STALE
            new = method(self, ts, stimulus_id)
            if ts.state != start:
                log.append((key, start, ts.state, stimulus_id, now))
            if new:
                pending.extend(new.items())

    # ---------------------------------------------------------------- helpers

    def _new(self, key: Key, priority: int) -> WorkerTask:
        self._seq += 1
        ts = WorkerTask(key, priority=priority, seq=self._seq)
        self.tasks[key] = ts
        return ts

    @staticmethod
    def _unneeded(ts: WorkerTask) -> str | None:
        """The recommendation for a record, if nothing needs it any more."""
        if ts.requested or ts.dependents:
            return None
        if ts.state == FLIGHT or ts.state == EXECUTING:
            return CANCELLED
        if ts.state == CANCELLED:
            return None
        return FORGOTTEN

    def _unlink_dependencies(self, ts: WorkerTask) -> Recs:
        """``ts`` needs its dependencies no more; drop those nobody else needs."""
        recs: Recs = {}
        for dep in ts.dependencies:
            dep.dependents.pop(ts, None)
            rec = self._unneeded(dep)
            if rec:
                recs[dep.key] = rec
        ts.dependencies.clear()
        ts.waiting_for_data.clear()
        return recs

    def _give_back_dependents(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        """``ts`` will never be in ``data``: hand the tasks that need it back."""
        recs: Recs = {}
        for dts in ts.dependents:
            if dts.state == WAITING or dts.state == READY:
                self._out.append(SendReschedule(key=dts.key, stimulus_id=stimulus_id))
                recs[dts.key] = FORGOTTEN
        return recs

    # ------------------------------------------------------------ transitions

    def _t_waiting(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        ts.state = WAITING
        return {}

    def _t_ready(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        if ts.waiting_for_data:
            return {}
        ts.state = READY
        heap = self._constrained if ts.resources else self._ready
        heapq.heappush(heap, (ts.priority, ts.seq, ts.key))
        return {}

    def _t_fetch(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        ts.state = FETCH
        ts.peer = None
        ts.previous = None
        self._fetch[ts.key] = None
        return {}

    def _t_fetch_flight(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        del self._fetch[ts.key]
        ts.state = FLIGHT
        return {}

    def _t_fetch_released(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        del self._fetch[ts.key]
        ts.state = RELEASED
        return {}

    def _t_ready_executing(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        ts.state = EXECUTING
        self.executing.add(ts.key)
        if ts.resources:
            self._hold_resources(ts)
        self._out.append(Execute(key=ts.key, stimulus_id=stimulus_id))
        return {}

    def _t_memory(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        if ts.state == FETCH:
            del self._fetch[ts.key]
        ts.state = MEMORY
        ts.previous = None
        recs = self._unlink_dependencies(ts)
        for dts in ts.dependents:
            waiting_for_data = dts.waiting_for_data
            if ts in waiting_for_data:
                waiting_for_data.discard(ts)
                if not waiting_for_data and dts.state == WAITING:
                    recs[dts.key] = READY
        if not ts.requested and not ts.dependents:
            recs[ts.key] = FORGOTTEN
        return recs

    def _t_executing_error(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        ts.state = ERROR
        self._out.append(
            SendTaskErred(
                key=ts.key,
                exception=ts.exception,
                traceback=ts.traceback,
                exception_text=ts.exception_text,
                stimulus_id=stimulus_id,
            )
        )
        recs = self._unlink_dependencies(ts)
        recs.update(self._give_back_dependents(ts, stimulus_id))
        return recs

    def _t_cancel(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        if ts.state == EXECUTING:
            self._out.append(CancelExecute(key=ts.key, stimulus_id=stimulus_id))
        ts.previous = ts.state
        ts.state = CANCELLED
        ts.requested = False
        return self._unlink_dependencies(ts)

    def _t_cancelled_executing(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        if ts.previous == EXECUTING:
            ts.state = EXECUTING
            ts.previous = None
        return {}

    def _t_cancelled_flight(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        if ts.previous == FLIGHT:
            ts.state = FLIGHT
            ts.previous = None
        return {}

    def _t_forget(self, ts: WorkerTask, stimulus_id: str) -> Recs:
        key = ts.key
        if ts.state == FETCH:
            del self._fetch[key]
        elif ts.state == MEMORY:
            self.data.pop(key, None)
        ts.state = FORGOTTEN
        del self.tasks[key]
        recs = self._unlink_dependencies(ts)
        recs.update(self._give_back_dependents(ts, stimulus_id))
        return recs

    _TRANSITIONS: dict[tuple[str, str], Callable[[WorkerState, WorkerTask, str], Recs]] = {
        (RELEASED, WAITING): _t_waiting,
        (RELEASED, READY): _t_ready,
        (RELEASED, FETCH): _t_fetch,
        (RELEASED, MEMORY): _t_memory,
        (RELEASED, FORGOTTEN): _t_forget,
        (WAITING, READY): _t_ready,
        (WAITING, MEMORY): _t_memory,
        (WAITING, FORGOTTEN): _t_forget,
        (FETCH, FLIGHT): _t_fetch_flight,
        (FETCH, RELEASED): _t_fetch_released,
        (FETCH, MEMORY): _t_memory,
        (FETCH, FORGOTTEN): _t_forget,
        (FLIGHT, MEMORY): _t_memory,
        (FLIGHT, FETCH): _t_fetch,
        (FLIGHT, CANCELLED): _t_cancel,
        (FLIGHT, FORGOTTEN): _t_forget,
        (READY, EXECUTING): _t_ready_executing,
        (READY, MEMORY): _t_memory,
        (READY, FORGOTTEN): _t_forget,
        (EXECUTING, MEMORY): _t_memory,
        (EXECUTING, ERROR): _t_executing_error,
        (EXECUTING, CANCELLED): _t_cancel,
        (MEMORY, FORGOTTEN): _t_forget,
        (ERROR, MEMORY): _t_memory,
        (ERROR, FORGOTTEN): _t_forget,
        (CANCELLED, EXECUTING): _t_cancelled_executing,
        (CANCELLED, FLIGHT): _t_cancelled_flight,
        (CANCELLED, FETCH): _t_fetch,
        (CANCELLED, MEMORY): _t_memory,
        (CANCELLED, FORGOTTEN): _t_forget,
    }
