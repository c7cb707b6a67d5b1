"""How a worker runs the tasks its core starts (``Execute``), and when they ran:
a mixin of :class:`~trioclust.runtime.worker.Worker`.

Theory of operation
-------------------
``_execute`` loads the task, fills in its dependencies' values, and starts it
once the scheduler can know that it started (the ``task-started`` message is
written): a task that kills the worker is then blamed, and not the tasks
still waiting here for a thread. Plain functions go to the worker's own
:class:`~trioclust.runtime.thread_pool.ThreadPool` as a ``_ThreadJob``;
coroutine functions run in the worker's nursery under a cancel scope, so
``CancelExecute`` really cancels them. ``_finish`` turns the outcome into an
``ExecuteSucceeded`` / ``ExecuteFailed`` event, unless the worker's state was
reset since the task began (``_generation``).

A thread job cancelled while queued is skipped when a thread reaches it; one
cancelled while running holds its thread until it returns (``_held``).
``_slots`` is how many tasks the core may start at once: one per thread and a
queue per thread (``worker.prefetch-per-thread``, deeper for short tasks),
but only the one slot for a held thread; ``_report_held`` tells the
scheduler (``threads-held``) and the core (``SlotsChanged``) when that
changes.

Each finished or failed task reports when its code ran (``start``/``stop``,
measured around the call on the thread that ran it), that thread's ident, and
the fetches of its dependencies from peers (``transfers``). The times are
taken with ``time.time()`` here and shifted onto the scheduler's clock by
:class:`ClockOffset`, which the replies to ``register-worker`` and to each
heartbeat (a request, answered with the scheduler's time) keep up to date.
The timings wait in ``_timings`` from the end of the run until the report
leaves (``_add_timing``), as small results wait in ``_inline``.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from trioclust import task_context
from trioclust.core import events as ev
from trioclust.core.keys import Key
from trioclust.core.worker_state import WorkerState
from trioclust.core.worker_tasks import EXECUTING
from trioclust.protocol import Serialized
from trioclust.protocol import messages as msgs
from trioclust.protocol.actors import ActorRef, CreateActor
from trioclust.protocol.run_spec import loads_task
from trioclust.protocol.task_spec import substitute
from trioclust.runtime.execution import Failure, Success, pack_failure, pack_success, run_sync
from trioclust.runtime.worker_task_clients import _may_get_client
from trioclust.runtime.worker_transfers import Unloadable

if TYPE_CHECKING:
    from trioclust.runtime.spill import SpillStore
    from trioclust.runtime.thread_pool import ThreadPool


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


def _run_timed(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], inline_limit: int
) -> tuple[Success | Failure, float, float, int]:
    """On a worker thread: run the task, and say when and on which thread."""
    start = time.time()
    outcome = run_sync(fn, args, kwargs, inline_limit)
    return outcome, start, time.time(), threading.get_ident()


class TaskExecution:
    """The Worker's task execution (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Worker's

        state: WorkerState
        nthreads: int
        inline_limit: int
        memory_limit: int
        clock: ClockOffset
        _generation: int
        _unloadable: dict[Key, Unloadable]
        _threads: ThreadPool
        _prefetch: int
        _prefetch_short: int
        _prefetch_duration: float
        _held: set[_ThreadJob]
        _held_reported: int
        _thread_jobs: dict[Key, _ThreadJob]
        _transfers: dict[Key, list[Any]]
        _timings: dict[Key, tuple[float, float, int, list[list[Any]] | None]]
        _inline: dict[Key, Serialized]
        _cancel_scopes: dict[Key, trio.CancelScope]
        _nursery: trio.Nursery | None
        _store: SpillStore | None
        _memory_poke: trio.Event
        _result_size: float
        task_client_async: Any

        def _handle(self, *events: Any) -> None: ...

        def _send(
            self,
            msg: Any,
            *,
            urgent: bool = True,
            on_written: Callable[[], object] | None = None,
        ) -> None: ...

        def _create_actor(self, key: Key, cls: type, *args: Any, **kwargs: Any) -> ActorRef: ...

        def _task_context(
            self, key: Key, generation: int, *, in_thread: bool
        ) -> task_context.TaskContext: ...

        def _check_memory(self) -> None: ...

        async def _start_task_client_async(self) -> None: ...

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

    def _raise_unloadable(self, dependencies: Any) -> None:
        """Raise the exception of a dependency fetched here that would not
        unpickle (runtime/worker_transfers.py's Unloadable); forget those no
        longer held."""
        data = self.state.data
        unloadable = self._unloadable
        for key in [key for key in unloadable if key not in data]:
            del unloadable[key]
        for dep in dependencies:
            stand_in = unloadable.get(dep.key)
            if stand_in is not None:
                if data.get(dep.key) is stand_in:
                    raise stand_in.error
                del unloadable[dep.key]  # a value came in since

    def _execute(self, key: Key, stimulus_id: str) -> None:
        ts = self.state.tasks[key]
        generation = self._generation
        try:
            fn, args, kwargs = loads_task(ts.run_spec)
            if ts.dependencies:
                if self._unloadable:
                    self._raise_unloadable(ts.dependencies)
                args = substitute(args, self.state.data)
                kwargs = substitute(kwargs, self.state.data)
        except BaseException as exc:
            self._finish(key, generation, pack_failure(exc, skip_frames=0))
            return
        if isinstance(fn, CreateActor):
            fn = partial(self._create_actor, key, fn.cls)
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
            context = self._task_context(key, generation, in_thread=True)
            job = _ThreadJob()
            self._thread_jobs[key] = job

            def run() -> Any:
                if not job.begin():
                    return _SKIPPED
                task_context.bind_thread(context)
                try:
                    return _run_timed(fn, args, kwargs, limit)
                finally:
                    task_context.unbind_thread()

            def start() -> None:
                if self._memory_poke.is_set():
                    # a big result came in since the last measure: spill first,
                    # so that this task's memory does not add to it
                    self._check_memory()
                self._threads.submit(
                    run, lambda timed: self._thread_done(key, generation, job, timed, transfers)
                )

        # the code starts once the scheduler can know that it started: a task that
        # kills this worker is then blamed (with any queued behind it in its
        # thread), and not the tasks still waiting here for a thread
        started: msgs.TaskStartedMsg = {"op": "task-started", "key": key, "stimulus_id": stimulus_id}
        self._send(started, on_written=start)

    async def _run_coroutine(
        self, key: Key, generation: int, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
        transfers: list[list[Any]] | None = None,
    ) -> None:
        start = time.time()
        with trio.CancelScope() as scope:
            self._cancel_scopes[key] = scope
            task_context.set_coroutine_task(self._task_context(key, generation, in_thread=False))
            try:
                if self.task_client_async is None and _may_get_client(fn):
                    await self._start_task_client_async()
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

    def _thread_done(
        self, key: Key, generation: int, job: _ThreadJob, timed: Any,
        transfers: list[list[Any]] | None,
    ) -> None:
        if self._thread_jobs.get(key) is job:
            del self._thread_jobs[key]
        if job in self._held:
            self._held.discard(job)
            self._report_held(f"thread-returned-{key}")
        if timed is _SKIPPED:
            ts = self.state.tasks.get(key)
            if generation == self._generation and ts is not None and ts.state == EXECUTING:
                self._execute(key, f"execute-again-{key}")  # asked for again meanwhile
                return
            outcome = pack_failure(RuntimeError(f"task {key!r} was cancelled before it started"))
            self._finish(key, generation, outcome)
            return
        self._finish(key, generation, timed[0], timed[1:], transfers)

    def _finish(
        self, key: Key, generation: int, outcome: Success | Failure,
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
        self._timings.pop(key, None)  # read while handling either
        if store is not None:
            store.drop_expected(key)  # not stored after all (cancelled meanwhile)
            if isinstance(outcome, Success):
                self._result_size = max(outcome.nbytes, self._result_size * 0.9)
                if outcome.nbytes * 100 >= self.memory_limit:
                    # a big result: measure now rather than at the next tick, as
                    # tasks that make such results quickly outrun the monitor; in
                    # the monitor's task, once the result is referenced by the
                    # store alone (so that spilling it frees its memory)
                    self._memory_poke.set()

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
