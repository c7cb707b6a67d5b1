"""What the dashboard remembers about work done: the task stream and its totals.

Theory of operation
-------------------
The scheduler's core keeps no clock and forgets finished tasks, so the
dashboard keeps its own record, fed by the scheduler runtime with everything
that passes through ``SchedulerState.handle``::

    instructions = self.state.handle(*events)
    self.task_stream.observe(events, instructions)

From those alone the recorder follows each run of a task on a worker:

* a ``ComputeTask`` instruction starts a run of ``key`` on ``worker``;
* a ``TaskFinished`` or ``TaskErred`` event from that same worker ends it as
  ``"memory"`` or ``"erred"``; one from another worker is stale and ignored,
  as the core ignores it;
* a ``RescheduleTask`` from that worker ends it as ``"rescheduled"``, a
  ``RemoveWorker`` ends every run on the worker as ``"lost"``, and a
  ``FreeKeys`` naming a running key ends that run as ``"cancelled"``.

Events are read before instructions: a ``TaskFinished`` always refers to a run
started by an earlier call, while the ``ComputeTask`` instructions of this call
start new ones. Finished runs go into a bounded deque (the newest
``maxlen``); the totals count every run ever finished, by outcome.

When a run *started executing* is an estimate. The scheduler sends a worker
more tasks than it has threads (``scheduler.worker-saturation``), so the time
of sending includes waiting in the worker's queue, and the worker does not
report its own timings. The recorder therefore replays each worker's threads:
it keeps, per worker (its ``nthreads`` from ``AddWorker``), the times at
which its threads last became free, and a run that ends in ``memory`` or
``erred`` is taken to have run on the thread that became free first, from
``max(sent, that time)`` to its end. For tasks run in the order they were
sent, which is how a worker runs tasks of equal priority, this is exact up to
the network's delay.
"""

from __future__ import annotations

import heapq
import itertools
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from trioclust import config
from trioclust.core import events as ev
from trioclust.core import instructions as ins
from trioclust.core.keys import Key

__all__ = ["TaskRecord", "TaskStream", "key_prefix"]

#: Outcomes of a run, as ``TaskRecord.status`` and the keys of ``TaskStream.totals``.
OUTCOMES = ("memory", "erred", "cancelled", "lost", "rescheduled")

_HASH_PART = re.compile(r"(?:[0-9a-f]{8,}|[0-9]+)")


def key_prefix(key: Key) -> str:
    """The readable part of a key: ``"inc-3f2a9c0d..."`` gives ``"inc"``.

    A tuple key, as dask collections make (``("x-1f3e...", 0, 1)``), gives
    the prefix of its first element; a number, itself as text.

    Trailing ``-``-separated parts that look like hashes (8 or more hex
    digits) or counters (digits) are dropped; a key made only of such parts is
    its own prefix. Not cached: most keys are unique (a cache of them only
    kept them alive in the scheduler), and this costs about a microsecond.
    """
    while isinstance(key, tuple):
        if not key:
            return "()"
        key = key[0]
    if not isinstance(key, str):
        return str(key)
    parts = key.split("-")
    while len(parts) > 1 and _HASH_PART.fullmatch(parts[-1]):
        parts.pop()
    return "-".join(parts) if parts[0] else key


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One run of a task on a worker.

    Attributes:
        id: Increases by one per finished run; lets a reader ask for newer ones.
        key: The task's key.
        prefix: ``key_prefix(key)``, what the dashboard groups and colours by.
        worker: The address of the worker that ran it.
        sent: When the scheduler sent it to the worker (seconds since the epoch).
        start: When it started executing, estimated (see the module's notes);
            ``sent`` for runs that did not end in ``memory`` or ``erred``.
        stop: When the scheduler learnt how it ended.
        status: How it ended: one of ``OUTCOMES``.
    """

    id: int
    key: Key
    prefix: str
    worker: str
    sent: float
    start: float
    stop: float
    status: str


class TaskStream:
    """A bounded record of task runs, fed with the scheduler's events and instructions.

    Args:
        maxlen: How many finished runs to keep; default from
            ``dashboard.task-stream-length``.
        clock: Returns the current time in seconds since the epoch (for tests).
    """

    def __init__(self, maxlen: int | None = None, *, clock: Callable[[], float] = time.time) -> None:
        length = maxlen if maxlen is not None else config.get_int("dashboard.task-stream-length")
        # finished runs as (id, key, worker, sent, start, stop, status): the
        # scheduler's hot path only appends a tuple; TaskRecords (and their
        # prefixes) are made when the dashboard reads them
        self._records: deque[tuple[int, Key, str, float, float, float, str]] = deque(maxlen=length)
        self._running: dict[Key, tuple[str, float]] = {}  # key -> (worker, sent)
        # per worker, a heap of the times its threads became free
        self._threads: dict[str, list[float]] = {}
        self._ids = itertools.count(1)
        self._clock = clock
        self.totals: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    def __repr__(self) -> str:
        return f"<TaskStream running={len(self._running)} totals={self.totals}>"

    def observe(self, events: Iterable[object], instructions: Iterable[object]) -> None:
        """Record what one ``SchedulerState.handle`` call saw and decided.

        Args:
            events: The events passed to ``handle``, in order.
            instructions: The instructions it returned, in order.
        """
        # exact type tests, the most frequent first: this runs for every
        # message the scheduler handles
        now = self._clock()
        for event in events:
            if type(event) is ev.TaskFinished:
                self._end(event.key, event.worker, "memory", now)
            elif type(event) is ev.TaskErred:
                self._end(event.key, event.worker, "erred", now)
            elif type(event) is ev.RescheduleTask:
                self._end(event.key, event.worker, "rescheduled", now)
            elif type(event) is ev.AddWorker:
                self._threads[event.address] = [0.0] * max(event.nthreads, 1)
            elif type(event) is ev.RemoveWorker:
                address = event.address
                for key in [k for k, run in self._running.items() if run[0] == address]:
                    self._end(key, address, "lost", now)
                self._threads.pop(address, None)
        running = self._running
        for instruction in instructions:
            if type(instruction) is ins.ComputeTask:
                running[instruction.key] = (instruction.worker, now)
            elif type(instruction) is ins.FreeKeys:
                worker = instruction.worker
                for key in instruction.keys:
                    self._end(key, worker, "cancelled", now)

    def _end(self, key: Key, worker: str, status: str, now: float) -> None:
        run = self._running.get(key)
        if run is None or run[0] != worker:
            return
        del self._running[key]
        sent = start = run[1]
        threads = self._threads.get(worker)
        if threads is not None and (status == "memory" or status == "erred"):
            free = heapq.heapreplace(threads, now)
            if free > start:
                start = free
        self.totals[status] += 1
        self._records.append((next(self._ids), key, worker, sent, start, now, status))

    @property
    def completed(self) -> int:
        """Runs that ended with their result in memory."""
        return self.totals["memory"]

    @property
    def last_id(self) -> int:
        """The ``id`` of the newest finished run, 0 before the first."""
        return self._records[-1][0] if self._records else 0

    def recent(self, n: int | None = None, *, since: int = 0) -> list[TaskRecord]:
        """Finished runs, oldest first.

        Args:
            n: At most this many, the newest; all that are kept if None.
            since: Only runs whose ``id`` is greater than this.
        """
        out: list[TaskRecord] = []
        for rid, key, worker, sent, start, stop, status in reversed(self._records):
            if rid <= since or (n is not None and len(out) >= n):
                break
            out.append(TaskRecord(rid, key, key_prefix(key), worker, sent, start, stop, status))
        out.reverse()
        return out

    def running(self) -> list[tuple[Key, str, float, float | None]]:
        """Runs not finished yet, as ``(key, worker, sent, start)``, oldest first.

        ``start`` is the estimated start of execution for as many runs per
        worker as it has threads (the oldest), None for the rest: those wait
        in the worker's queue.
        """
        runs = sorted(self._running.items(), key=lambda item: item[1][1])
        free = {worker: sorted(times) for worker, times in self._threads.items()}
        out: list[tuple[Key, str, float, float | None]] = []
        for key, (worker, sent) in runs:
            times = free.get(worker)
            if times is None:
                start: float | None = sent  # a worker we never saw join
            elif times:
                start = max(sent, times.pop(0))
            else:
                start = None
            out.append((key, worker, sent, start))
        return out
