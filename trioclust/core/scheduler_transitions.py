"""The scheduler's transition table, the driver that follows it, and task placement."""

# Theory of operation
# ===================
#
# This is the half of the scheduler that moves tasks between states; the
# states, the rules and the events that set them off are described in
# scheduler_state.py, whose ``SchedulerState`` builds on this class.
#
# Mechanics
# ---------
# ``_TRANSITIONS`` maps (start, finish) to one method. A method changes the
# task, appends instructions, and returns *recommendations* {key: finish};
# ``_transitions`` follows them until none is left, and logs each change of
# state (story.py). A recommendation with no table entry for the task's
# current state was made stale by a later change in the same pass, and is
# dropped; ``_STALE`` lists the pairs for which that happens by design (each
# with its reason). Any other missing pair is a bug: under ``validate`` it
# raises ``InvalidTransition`` with the key's story.
# A task that becomes ready to run (all dependencies in memory) is not
# placed at once: it goes into a heap of (priority, creation) that the driver
# empties only when no other recommendation is pending. So a batch of ready
# tasks is placed best-priority first, and never before the bookkeeping of
# the same event (lost data, released workers) is done. A "processing"
# recommendation for a waiting or no-worker task takes the same path. An
# entry whose task left the heap another way meanwhile (released, say, when
# a dependent erred later in the same pass) is skipped when it surfaces.
#
# Placement of ready tasks (``_assign``) goes through scheduler_placement.py;
# a restricted task (``workers=``, ``resources=``) takes ``_place_restricted``
# instead: it is never queued, and waits as no-worker until a worker fits.
# Work stealing (``_steal``, scheduler_stealing.py) moves a processing task
# from one worker to another without a change of state: the move is logged as
# processing -> processing. A task that raises while it has ``retries`` left
# goes back to waiting (``_retry_erred``, from the TaskErred handler); a client
# retrying erred keys (RetryTasks) moves them erred -> released -> waiting.
# Queued tasks wait in a heap of (priority, creation, key); a task that leaves
# the queue another way leaves its entry behind, skipped when it surfaces.

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from trioclust.core.instructions import (
    ComputeTask,
    FreeKeys,
    KeyErred,
    KeyInMemory,
    KeyLost,
    SchedulerInstruction,
)
from trioclust.core.keys import Key
from trioclust.core.scheduler_placement import Placement
from trioclust.core.scheduler_stealing import has_thief, plan_steals, plan_stranded
from trioclust.core.scheduler_tasks import (
    ACTIVE_STATES,
    EMPTY,
    ERRED,
    FORGOTTEN,
    MEMORY,
    NO_WORKER,
    PROCESSING,
    QUEUED,
    RELEASED,
    TASK_STATES,
    WAITING,
    AnySet,
    SmallSets,
    TaskState,
    WorkerInfo,
)
from trioclust.core.story import InvalidTransition, Story, StoryEntry, story
from trioclust.errors import LostData

__all__ = ["Recs", "SchedulerTransitions"]

#: Recommendations: the state each key should move to next.
Recs = dict[Key, str]

_NOTHING: Mapping[Key, Any] = MappingProxyType({})

#: (start, finish) pairs the table lacks because a recommendation for them is
#: stale by design; the driver drops them. Any other missing pair is a bug.
_STALE: frozenset[tuple[str, str]] = frozenset(
    {
        # Released on the way by another route: a dead worker's lost keys are
        # all recommended for release at once, after its tasks were
        # rescheduled, and a task that erred there (KilledWorker) or released
        # a lost key may already have released it as unneeded.
        (RELEASED, RELEASED),
    }
)


class SchedulerTransitions:
    """The scheduler's state and the transitions between task states.

    Not used on its own: ``SchedulerState`` adds the event handlers. See that
    class for the arguments.
    """

    def __init__(
        self,
        *,
        allowed_failures: int = 3,
        worker_saturation: float = 4.0,
        root_saturation: float = math.inf,
        root_memory_fraction: float = 0.0,
        transition_log_length: int = 100_000,
        validate: bool = False,
        work_stealing: bool = True,
        stranded_after: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if allowed_failures < 0:
            raise ValueError(f"allowed_failures must be >= 0, got {allowed_failures!r}")
        if not worker_saturation > 0:
            raise ValueError(f"worker_saturation must be > 0, got {worker_saturation!r}")
        if not root_saturation > 0:
            raise ValueError(f"root_saturation must be > 0, got {root_saturation!r}")
        if not stranded_after > 0:  # also the runtime's steal-look interval
            raise ValueError(
                f"scheduler.work-stealing-interval must be > 0 seconds, got {stranded_after!r}"
            )
        self.allowed_failures = allowed_failures
        self.worker_saturation = worker_saturation
        self.root_saturation = root_saturation
        self.root_memory_fraction = root_memory_fraction
        self.tasks: dict[Key, TaskState] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.clients: set[str] = set()
        self.validate = validate
        self.transition_log: deque[StoryEntry] = deque(maxlen=transition_log_length)
        self._clock = clock
        self._now = 0.0  # the clock's reading for the current handle() call
        self._counts: dict[str, int] = dict.fromkeys(TASK_STATES, 0)
        self._seceded = 0  # processing tasks that seceded (in some WorkerInfo.long_running)
        self._client_wants: dict[str, dict[Key, None]] = {}
        self._out: list[SchedulerInstruction] = []
        # (priority, seq, key) of tasks ready to run, placed once the
        # bookkeeping of the current step is done
        self._ready: list[tuple[int, int, Key]] = []
        # (priority, seq, key) of queued tasks; entries of tasks that left the
        # queue are skipped when they surface
        self._queue: list[tuple[int, int, Key]] = []
        self._unrunnable: dict[Key, None] = {}
        self._placement = Placement(self.workers)
        self._seq = 0
        # inline results on their way from TaskFinished to KeyInMemory, and
        # the clients the runtime told already (TaskFinished.told)
        self._values: dict[Key, object] = {}
        self._told: dict[Key, tuple[str, ...]] = {}
        self._sets = SmallSets()  # how tasks' sets are changed (interned while small)
        # holders of scattered keys on their way from UpdateData to memory
        self._scattered_to: dict[Key, tuple[str, ...]] = {}
        # task reports for the next handle(), and whether one was told early
        # since the last (see scheduler_state.py)
        self._reports: list[Any] = []
        self._told_early = False
        # retiring workers: how many replica copies each still waits for
        self._retiring: dict[str, int] = {}
        # rebalanced keys on their way: (key, target) -> the holder they leave
        self._moving: dict[tuple[Key, str], str] = {}
        self.work_stealing = work_stealing
        # processing tasks whose worker has not reported their start (stealable)
        self._unstarted = 0
        # (tasks assigned, workers) when stealing last found nothing to move
        self._steal_checked: tuple[int, int] = (-1, -1)
        #: stranded tasks (scheduler_stealing.py): their worker and since when
        self._stranded: dict[Key, tuple[str, float]] = {}
        self._starts = 0  # start reports so far: TaskState.started's order
        #: seconds a task stays stranded before a steal look moves it
        self.stranded_after = stranded_after
        self._assigned = 0
        # key -> workers told to drop it when it was stolen from them: a result
        # they report afterwards was dropped there (see _stale_result)
        self._stolen: dict[Key, set[str]] = {}

    # --------------------------------------------------------------- the driver

    def _transitions(self, recs: Recs, stimulus_id: str) -> None:
        """Carry out recommendations, and those they lead to, until none is left."""
        tasks = self.tasks
        ready = self._ready
        table = self._TRANSITIONS
        log = self.transition_log
        counts = self._counts
        now = self._now
        while True:
            if recs:
                key, finish = recs.popitem()
                ts = tasks.get(key)
                if ts is None:
                    continue
                start = ts.state
                if finish == PROCESSING and (start == WAITING or start == NO_WORKER):
                    heapq.heappush(ready, (ts.priority, ts.seq, key))
                    continue
                method = table.get((start, finish))
                if method is None:
                    if self.validate and (start, finish) not in _STALE:
                        raise InvalidTransition(key, start, finish, stimulus_id, self.story(key))
                    continue  # made stale by a later change: see _STALE
            elif ready:
                key = heapq.heappop(ready)[2]
                ts = tasks.get(key)
                if ts is None:
                    continue
                start = ts.state
                finish = PROCESSING
                method = table.get((start, PROCESSING))
                if method is None:
                    continue  # it left the heap another way (released, say) meanwhile
            else:
                return
            new = method(self, ts, stimulus_id)
            if ts.state != start:
                log.append((key, start, ts.state, stimulus_id, now))
                counts[start] -= 1
                if ts.state != FORGOTTEN:
                    counts[ts.state] += 1
            if new:
                recs.update(new)

    def story(self, *keys: Key) -> Story:
        """The recorded transitions of ``keys``, oldest first: tuples of
        ``(key, start, finish, stimulus_id, time)``."""
        return story(self.transition_log, keys)

    # ---------------------------------------------------------------- helpers

    def _new_task(
        self, key: Key, run_spec: object, priority: int, *, has_run_spec: bool = True
    ) -> TaskState:
        self._seq += 1
        ts = TaskState(key, run_spec, priority=priority, seq=self._seq, has_run_spec=has_run_spec)
        self.tasks[key] = ts
        self._counts[RELEASED] += 1
        return ts

    @staticmethod
    def _key_erred(ts: TaskState, client: str, stimulus_id: str) -> KeyErred:
        return KeyErred(
            client=client,
            key=ts.key,
            exception=ts.exception,
            traceback=ts.traceback,
            exception_text=ts.exception_text,
            stimulus_id=stimulus_id,
        )

    def _is_processing_on(self, ts: TaskState, address: str) -> bool:
        ws = ts.processing_on
        return ws is not None and ws.address == address and self.workers.get(address) is ws

    @staticmethod
    def _unneeded(ts: TaskState) -> str | None:
        """The recommendation for a task nobody needs any more."""
        state = ts.state
        if state in ACTIVE_STATES or state == MEMORY:
            return RELEASED
        if (state == RELEASED or state == ERRED) and not ts.dependents:
            return FORGOTTEN
        return None

    def _drop_needs(self, ts: TaskState) -> Recs:
        """``ts`` will not run (any more): its dependencies may be unneeded now."""
        recs: Recs = {}
        for dep in ts.dependencies:
            if ts in dep.waiters:
                waiters = dep.waiters = self._sets.discard(dep.waiters, ts)
                if not waiters and not dep.who_wants:
                    rec = self._unneeded(dep)
                    if rec:
                        recs[dep.key] = rec
        return recs

    def _add_holder(self, ts: TaskState, ws: WorkerInfo) -> None:
        ts.who_has = self._sets.add(ts.who_has, ws.address)
        ws.has_what.add(ts.key)
        ws.nbytes_stored += ts.nbytes

    def _remove_holder(self, ts: TaskState, address: str) -> None:
        ts.who_has = self._sets.discard(ts.who_has, address)
        ws = self.workers.get(address)
        if ws is not None and ts.key in ws.has_what:
            ws.has_what.discard(ts.key)
            ws.nbytes_stored -= ts.nbytes

    # -------------------------------------------------------------- placement

    def _assign(self, ts: TaskState, ws: WorkerInfo, stimulus_id: str) -> None:
        ts.state = PROCESSING
        ts.processing_on = ws
        ws.processing.add(ts.key)
        self._placement.touch(ws)
        self._unstarted += 1
        self._assigned += 1
        if self._stolen:
            self._stale_result(ts.key, ws.address)  # a report from it is of this run now
        deps = ts.dependencies
        r = ts.restrictions
        self._out.append(
            ComputeTask(
                worker=ws.address,
                key=ts.key,
                run_spec=ts.run_spec,
                who_has={d.key: tuple(sorted(d.who_has)) for d in deps} if deps else _NOTHING,
                nbytes={d.key: d.nbytes for d in deps} if deps else _NOTHING,
                priority=ts.priority,
                stimulus_id=stimulus_id,
                resources=(r.resources or None) if r is not None else None,
            )
        )

    def _unassign(self, ts: TaskState) -> None:
        ws = ts.processing_on
        if ws is None:
            return
        ts.processing_on = None
        if ts.started:
            ws.nstarted -= 1
        else:
            self._unstarted -= 1
        ts.started = 0
        ws.processing.discard(ts.key)
        if ws.long_running and ts.key in ws.long_running:
            ws.long_running.discard(ts.key)
            self._seceded -= 1
        if self.workers.get(ws.address) is ws:
            self._placement.touch(ws)

    def _fill_queue(self, stimulus_id: str) -> None:
        """Hand queued tasks, best priority first, to workers with room."""
        queue = self._queue
        while queue:
            key = queue[0][2]
            ts = self.tasks.get(key)
            if ts is None or ts.state != QUEUED:
                heapq.heappop(queue)
                continue
            if not self._placement.has_room(ts):
                return
            heapq.heappop(queue)
            self._transitions({key: PROCESSING}, stimulus_id)

    # ------------------------------------------------------------ transitions

    def _t_released_waiting(self, ts: TaskState, stimulus_id: str) -> Recs:
        if not ts.has_run_spec:
            exc = LostData(ts.key)
            ts.set_exception(exc, None, str(exc), ts.key)
            return {ts.key: ERRED}
        for dep in ts.dependencies:
            if dep.state == ERRED:
                ts.set_exception(
                    dep.exception, dep.traceback, dep.exception_text, dep.exception_blame
                )
                return {ts.key: ERRED}
        ts.state = WAITING
        return self._wait_for_dependencies(ts)

    def _wait_for_dependencies(self, ts: TaskState) -> Recs:
        recs: Recs = {}
        sets = self._sets
        waiting_on: AnySet[TaskState] = EMPTY
        for dep in ts.dependencies:
            dep.waiters = sets.add(dep.waiters, ts)
            if dep.state == MEMORY and dep.who_has:
                continue
            waiting_on = sets.add(waiting_on, dep)
            if dep.state == RELEASED:
                recs[dep.key] = WAITING
        ts.waiting_on = waiting_on
        if not waiting_on:
            heapq.heappush(self._ready, (ts.priority, ts.seq, ts.key))
        return recs

    def _t_waiting_processing(self, ts: TaskState, stimulus_id: str) -> Recs:
        if ts.waiting_on:
            return {}
        if ts.restrictions is not None:
            return self._place_restricted(ts, stimulus_id)
        ws = self._placement.choose(ts)
        if ws is None:
            if self.workers:  # all busy: queued here at once (the driver logs waiting -> queued)
                return self._t_waiting_queued(ts, stimulus_id)
            return {ts.key: NO_WORKER}
        self._assign(ts, ws, stimulus_id)
        return {}

    def _t_waiting_queued(self, ts: TaskState, stimulus_id: str) -> Recs:
        ts.state = QUEUED
        queue = self._queue
        heapq.heappush(queue, (ts.priority, ts.seq, ts.key))
        if len(queue) > 2 * self._counts[QUEUED] + 1024:
            queue[:] = sorted(
                {e for e in queue if (t := self.tasks.get(e[2])) is not None and t.state == QUEUED}
            )
        return {}

    def _t_waiting_no_worker(self, ts: TaskState, stimulus_id: str) -> Recs:
        ts.state = NO_WORKER
        self._unrunnable[ts.key] = None
        return {}

    def _t_no_worker_processing(self, ts: TaskState, stimulus_id: str) -> Recs:
        if not self.workers:
            return {}
        if ts.restrictions is not None:
            return self._place_restricted(ts, stimulus_id)
        ws = self._placement.choose(ts)
        if ws is None:
            return {ts.key: QUEUED}
        del self._unrunnable[ts.key]
        self._assign(ts, ws, stimulus_id)
        return {}

    def _t_no_worker_queued(self, ts: TaskState, stimulus_id: str) -> Recs:
        del self._unrunnable[ts.key]
        return self._t_waiting_queued(ts, stimulus_id)

    def _t_queued_processing(self, ts: TaskState, stimulus_id: str) -> Recs:
        ws = self._placement.choose(ts)
        if ws is None:  # only _fill_queue asks, after checking for room
            heapq.heappush(self._queue, (ts.priority, ts.seq, ts.key))
            return {}
        self._assign(ts, ws, stimulus_id)
        return {}

    def _t_processing_memory(self, ts: TaskState, stimulus_id: str) -> Recs:
        ws = ts.processing_on
        assert ws is not None
        self._unassign(ts)
        ts.state = MEMORY
        self._add_holder(ts, ws)
        return self._on_memory(ts, stimulus_id)

    def _t_released_memory(self, ts: TaskState, stimulus_id: str) -> Recs:
        ts.state = MEMORY
        for address in self._scattered_to.pop(ts.key, ()):
            self._add_holder(ts, self.workers[address])
        return self._on_memory(ts, stimulus_id)

    def _on_memory(self, ts: TaskState, stimulus_id: str) -> Recs:
        value = self._values.pop(ts.key, None)
        told = self._told.pop(ts.key, ())
        for client in sorted(ts.who_wants):
            if client in told:
                continue
            self._out.append(
                KeyInMemory(
                    client=client,
                    key=ts.key,
                    type_name=ts.type_name,
                    value=value,
                    stimulus_id=stimulus_id,
                )
            )
        recs = self._drop_needs(ts)
        for dts in ts.dependents:
            if ts in dts.waiting_on:
                waiting_on = dts.waiting_on = self._sets.discard(dts.waiting_on, ts)
                if not waiting_on and dts.state == WAITING:
                    heapq.heappush(self._ready, (dts.priority, dts.seq, dts.key))
        if not ts.who_wants and not ts.waiters:
            recs[ts.key] = RELEASED
        return recs

    def _t_to_erred(self, ts: TaskState, stimulus_id: str) -> Recs:
        state = ts.state
        if state == PROCESSING:
            self._unassign(ts)
        elif state == NO_WORKER:
            del self._unrunnable[ts.key]
        ts.state = ERRED
        ts.waiting_on = EMPTY
        for client in sorted(ts.who_wants):
            self._out.append(self._key_erred(ts, client, stimulus_id))
        recs = self._drop_needs(ts)
        for dts in ts.dependents:
            if dts.state in ACTIVE_STATES:
                dts.set_exception(ts.exception, ts.traceback, ts.exception_text, ts.exception_blame)
                if dts.state == PROCESSING:
                    self._cancel(dts, stimulus_id)
                recs[dts.key] = ERRED
        if not ts.who_wants and not ts.waiters and not ts.dependents:
            recs[ts.key] = FORGOTTEN
        return recs

    def _cancel(self, ts: TaskState, stimulus_id: str) -> None:
        ws = ts.processing_on
        if ws is not None and self.workers.get(ws.address) is ws:
            self._out.append(
                FreeKeys(worker=ws.address, keys=(ts.key,), stimulus_id=stimulus_id, cancel=True)
            )

    def _t_processing_waiting(self, ts: TaskState, stimulus_id: str) -> Recs:
        self._unassign(ts)
        ts.state = WAITING
        return self._wait_for_dependencies(ts)

    def _t_to_released(self, ts: TaskState, stimulus_id: str) -> Recs:
        state = ts.state
        if state == PROCESSING:
            self._cancel(ts, stimulus_id)
            self._unassign(ts)
        elif state == NO_WORKER:
            del self._unrunnable[ts.key]
        ts.state = RELEASED
        ts.waiting_on = EMPTY
        recs = self._drop_needs(ts)
        if ts.who_wants or ts.waiters:
            recs[ts.key] = WAITING
        elif not ts.dependents:
            recs[ts.key] = FORGOTTEN
        return recs

    def _t_memory_released(self, ts: TaskState, stimulus_id: str) -> Recs:
        key = ts.key
        for address in sorted(ts.who_has):
            self._remove_holder(ts, address)
            self._out.append(FreeKeys(worker=address, keys=(key,), stimulus_id=stimulus_id))
        recs: Recs = {}
        if ts.has_run_spec:
            for client in sorted(ts.who_wants):
                self._out.append(KeyLost(client=client, key=key, stimulus_id=stimulus_id))
        waiters = ts.waiters
        if waiters:
            # Its data is gone while dependents still need it.
            for dts in ts.dependents:
                if dts not in waiters:
                    continue
                dts.waiting_on = self._sets.add(dts.waiting_on, ts)
                if dts.state == PROCESSING:
                    self._cancel(dts, stimulus_id)
                    recs[dts.key] = WAITING
        ts.state = RELEASED
        if ts.who_wants or waiters:
            recs[key] = WAITING
        elif not ts.dependents:
            recs[key] = FORGOTTEN
        return recs

    def _t_to_forgotten(self, ts: TaskState, stimulus_id: str) -> Recs:
        if ts.who_wants or ts.waiters or ts.dependents:
            return {}
        ts.state = FORGOTTEN
        del self.tasks[ts.key]
        recs: Recs = {}
        for dep in ts.dependencies:
            dep.dependents.pop(ts, None)
            dep.waiters = self._sets.discard(dep.waiters, ts)
            if (
                not dep.dependents
                and not dep.who_wants
                and not dep.waiters
                and (dep.state == RELEASED or dep.state == ERRED)
            ):
                recs[dep.key] = FORGOTTEN
        if self._stolen:
            self._stolen.pop(ts.key, None)
        # interned sets may keep this object a while: keep it light
        ts.run_spec = ts.exception = ts.traceback = None
        if not self.tasks:
            self._sets.clear()
        return recs

    # ------------------------------------- restrictions, retries, stealing

    def _place_restricted(self, ts: TaskState, stimulus_id: str) -> Recs:
        """Send a restricted task (waiting or no-worker) to a worker that fits,
        or leave it waiting as no-worker until one joins."""
        ws = self._placement.choose_restricted(ts)
        if ws is None:
            return {} if ts.state == NO_WORKER else {ts.key: NO_WORKER}
        if ts.state == NO_WORKER:
            del self._unrunnable[ts.key]
        self._assign(ts, ws, stimulus_id)
        return {}

    def _task_started(self, ts: TaskState) -> None:
        """Its worker reported that ``ts`` started there: it may not be stolen."""
        if not ts.started:
            self._starts += 1
            ts.started = self._starts
            self._unstarted -= 1
            ws = ts.processing_on
            assert ws is not None
            ws.nstarted += 1

    def _retry_erred(self, ts: TaskState, stimulus_id: str) -> None:
        """``ts`` raised with retries left: run it again (anywhere), one retry fewer."""
        ts.retries -= 1
        ts.set_exception(None, None, "", None)
        self._transitions({ts.key: WAITING}, stimulus_id)

    def _t_erred_released(self, ts: TaskState, stimulus_id: str) -> Recs:
        # only RetryTasks asks: it then recommends waiting for the wanted keys
        ts.state = RELEASED
        ts.suspicious = 0
        ts.set_exception(None, None, "", None)
        return {}

    def _look_for_stranded(self, stimulus_id: str) -> None:
        """A StealLook: move the tasks stranded behind long ones (see
        scheduler_stealing.py), when some worker has a thread free."""
        if not self.work_stealing or not has_thief(self.workers, self._placement.least_occupied()):
            self._stranded.clear()
            return
        self._move(
            plan_stranded(self.workers, self.tasks.__getitem__, self._stranded, self._now, self.stranded_after),
            stimulus_id,
        )

    def _steal(self, stimulus_id: str) -> None:
        """Even out the workers' queues (scheduler_stealing.py), when a worker is
        hungry and some worker holds tasks it has not started."""
        if not self.work_stealing or self._unstarted <= 0:
            return
        if not has_thief(self.workers, self._placement.least_occupied()):
            return
        mark = (self._assigned, len(self.workers))
        if mark == self._steal_checked:
            return  # nothing changed since the last look found nothing to move
        moves = plan_steals(self.workers, self.tasks.__getitem__)
        if not moves:
            self._steal_checked = mark
            return
        self._move(moves, stimulus_id)

    def _move(self, moves: list[tuple[TaskState, WorkerInfo]], stimulus_id: str) -> None:
        """Carry steals out: the victim drops each task, its thief computes it."""
        log = self.transition_log
        stolen = self._stolen
        for ts, thief in moves:
            victim = ts.processing_on
            assert victim is not None
            if thief.address in stolen.get(ts.key, ()):
                continue  # its earlier run there may still report: never back
            stolen.setdefault(ts.key, set()).add(victim.address)
            self._out.append(
                FreeKeys(worker=victim.address, keys=(ts.key,), stimulus_id=stimulus_id, cancel=True)
            )
            self._unassign(ts)
            self._assign(ts, thief, stimulus_id)
            log.append((ts.key, PROCESSING, PROCESSING, stimulus_id, self._now))

    def _stale_result(self, key: Key, worker: str) -> bool:
        """Whether ``worker``'s report on ``key`` is of a run stolen from it
        (it was told to drop that run, and its result with it); forgets that."""
        victims = self._stolen.get(key)
        if victims is None or worker not in victims:
            return False
        victims.discard(worker)
        if not victims:
            del self._stolen[key]
        return True

    _TRANSITIONS: dict[tuple[str, str], Callable[[SchedulerTransitions, TaskState, str], Recs]] = {
        (RELEASED, WAITING): _t_released_waiting,
        (RELEASED, MEMORY): _t_released_memory,
        (RELEASED, ERRED): _t_to_erred,
        (RELEASED, FORGOTTEN): _t_to_forgotten,
        (WAITING, PROCESSING): _t_waiting_processing,
        (WAITING, QUEUED): _t_waiting_queued,
        (WAITING, NO_WORKER): _t_waiting_no_worker,
        (WAITING, ERRED): _t_to_erred,
        (WAITING, RELEASED): _t_to_released,
        (QUEUED, PROCESSING): _t_queued_processing,
        (QUEUED, ERRED): _t_to_erred,
        (QUEUED, RELEASED): _t_to_released,
        (NO_WORKER, PROCESSING): _t_no_worker_processing,
        (NO_WORKER, QUEUED): _t_no_worker_queued,
        (NO_WORKER, ERRED): _t_to_erred,
        (NO_WORKER, RELEASED): _t_to_released,
        (PROCESSING, MEMORY): _t_processing_memory,
        (PROCESSING, ERRED): _t_to_erred,
        (PROCESSING, WAITING): _t_processing_waiting,
        (PROCESSING, RELEASED): _t_to_released,
        (MEMORY, RELEASED): _t_memory_released,
        (ERRED, FORGOTTEN): _t_to_forgotten,
        (ERRED, RELEASED): _t_erred_released,
    }
