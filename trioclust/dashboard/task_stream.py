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

When the run's code started and stopped comes from the worker: its
``task-finished`` and ``task-erred`` reports carry ``start``, ``stop`` (on the
scheduler's clock: the worker shifts its own by its estimated offset),
``thread`` and the ``transfers`` of the dependencies it fetched for the run.
The scheduler hands them over with :meth:`TaskStream.finished` as the report
arrives, ahead of the core's pass over it; the event that follows in
``observe`` then finds the run ended and does nothing.

A run without timings (a worker that stopped before running it, a task whose
function could not even be unpickled) gets estimated ones: the recorder
replays each worker's threads, keeping per worker (its ``nthreads`` from
``AddWorker``) the times at which its threads last became free, and takes
such a run to have started at ``max(sent, the earliest of those)``. The same
replay estimates, for :meth:`TaskStream.running`, which of the runs under way
are executing and which wait in the worker's queue.
"""

from __future__ import annotations

import heapq
import itertools
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

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
        stop: When it stopped executing (the worker's report), or when the
            scheduler learnt how it ended.
        status: How it ended: one of ``OUTCOMES``.
        thread: The ident of the worker's thread that ran it (0: unknown).
        transfers: ``(start, stop, source worker, nbytes)`` of each dependency
            fetched from a peer for this run.
        nbytes: The size of its result (0 unless it ended in ``memory``).
        timed: Whether ``start`` and ``stop`` were measured by the worker
            (rather than estimated).
    """

    id: int
    key: Key
    prefix: str
    worker: str
    sent: float
    start: float
    stop: float
    status: str
    thread: int = 0
    transfers: tuple[tuple[float, float, str, int], ...] = ()
    nbytes: int = 0
    timed: bool = False

    def as_dask(self) -> dict[str, Any]:
        """This run as one entry of Dask's ``client.get_task_stream()`` data."""
        startstops = [
            {"action": "transfer", "start": t[0], "stop": t[1], "source": t[2]} for t in self.transfers
        ]
        startstops.append({"action": "compute", "start": self.start, "stop": self.stop})
        return {
            "key": self.key, "worker": self.worker, "thread": self.thread, "status": self.status,
            "nbytes": self.nbytes, "startstops": startstops, "id": self.id, "prefix": self.prefix,
        }


# a finished run as the hot path keeps it:
# (id, key, worker, sent, start, stop, status, thread, transfers, nbytes, timed)
_Row = tuple[int, Key, str, float, float, float, str, int, Any, int, bool]


class TaskStream:
    """A bounded record of task runs, fed with the scheduler's events and instructions.

    Args:
        maxlen: How many finished runs to keep; default from
            ``dashboard.task-stream-length``.
        clock: Returns the current time in seconds since the epoch (for tests).
    """

    def __init__(self, maxlen: int | None = None, *, clock: Callable[[], float] = time.time) -> None:
        length = maxlen if maxlen is not None else config.get_int("dashboard.task-stream-length")
        # finished runs as _Row tuples: the scheduler's hot path only appends a
        # tuple; TaskRecords (and their prefixes) are made when they are read
        self._records: deque[_Row] = deque(maxlen=length)
        self._running: dict[Key, tuple[str, float]] = {}  # key -> (worker, sent)
        # per worker, a heap of the times its threads became free
        self._threads: dict[str, list[float]] = {}
        self._ids = itertools.count(1)
        self._clock = clock
        self.totals: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.workers_added = 0
        self.workers_removed = 0
        # per prefix: runs by outcome and seconds computing / transferring,
        # folded from the rows lazily (see prefix_totals)
        self._prefix_totals: dict[str, dict[str, float]] = {}
        self._folded = 0  # the id of the newest row folded in
        self._fold_on_evict = False

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
                self.workers_added += 1
            elif type(event) is ev.RemoveWorker:
                address = event.address
                for key in [k for k, run in self._running.items() if run[0] == address]:
                    self._end(key, address, "lost", now)
                self._threads.pop(address, None)
                self.workers_removed += 1
        running = self._running
        for instruction in instructions:
            if type(instruction) is ins.ComputeTask:
                running[instruction.key] = (instruction.worker, now)
            elif type(instruction) is ins.FreeKeys:
                worker = instruction.worker
                for key in instruction.keys:
                    self._end(key, worker, "cancelled", now)

    def finished(
        self, key: Key, worker: str, status: str, start: float | None, stop: float | None,
        thread: int = 0, transfers: list[list[Any]] | None = None, nbytes: int = 0,
    ) -> None:
        """A worker reported the end of a run, with its timings.

        Args:
            key: The task.
            worker: The worker that reported it (a stale report from another
                worker than the one running ``key`` is ignored).
            status: ``"memory"`` or ``"erred"``.
            start: When its code started, on the scheduler's clock, or None
                when the worker sent no timings (then estimated).
            stop: When its code stopped (None: now).
            thread: The ident of the thread that ran it.
            transfers: ``[start, stop, source, nbytes]`` per dependency fetched for it.
            nbytes: The size of its result.
        """
        if start is None or stop is None:
            self._end(key, worker, status, self._clock(), nbytes=nbytes)
        else:
            self._end(key, worker, status, stop, start, thread, transfers, nbytes)

    def _end(
        self, key: Key, worker: str, status: str, now: float, start: float | None = None,
        thread: int = 0, transfers: list[list[Any]] | None = None, nbytes: int = 0,
    ) -> None:
        run = self._running.get(key)
        if run is None or run[0] != worker:
            return
        del self._running[key]
        sent = run[1]
        timed = start is not None
        threads = self._threads.get(worker)
        if threads is not None and (status == "memory" or status == "erred"):
            free = heapq.heapreplace(threads, now)
            if start is None:
                start = free if free > sent else sent
        if start is None:
            start = sent
        self.totals[status] += 1
        records = self._records
        if self._fold_on_evict and len(records) == records.maxlen and records[0][0] > self._folded:
            self._fold(records[0])  # the row about to fall out was never counted
            self._folded = records[0][0]
        records.append(
            (next(self._ids), key, worker, sent, start, now, status, thread, transfers, nbytes, timed)
        )

    def _fold(self, row: _Row) -> None:
        prefix = key_prefix(row[1])
        totals = self._prefix_totals.get(prefix)
        if totals is None:
            totals = self._prefix_totals[prefix] = {
                **dict.fromkeys(OUTCOMES, 0), "compute_seconds": 0.0, "transfer_seconds": 0.0,
            }
        totals[row[6]] += 1
        if row[6] == "memory" or row[6] == "erred":
            totals["compute_seconds"] += row[5] - row[4]
        for t in row[8] or ():
            totals["transfer_seconds"] += t[1] - t[0]

    def prefix_totals(self) -> dict[str, dict[str, float]]:
        """Per key prefix: runs by outcome, ``compute_seconds`` and ``transfer_seconds``.

        Counted lazily: the first call folds in the runs still kept, and from
        then on every run (a run about to leave the bounded record is folded
        in as it leaves, so the scheduler pays for this only once someone
        reads it, e.g. a Prometheus scrape of ``/metrics``).
        """
        self._fold_on_evict = True
        for row in reversed(self._records):
            if row[0] <= self._folded:
                break
            self._fold(row)
        self._folded = self.last_id or self._folded
        return self._prefix_totals

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
        return [_record(row) for row in self.rows(n, since=since)]

    def rows(self, n: int | None = None, *, since: int = 0) -> list[_Row]:
        """Like :meth:`recent`, as the raw tuples kept (for serializers that
        build their output straight from them, without a record per run).

        Each row is ``(id, key, worker, sent, start, stop, status, thread,
        transfers, nbytes, timed)``; ``transfers`` is None or a list of
        ``[start, stop, source, nbytes]``. Ids increase by one per row, so
        the rows wanted are the last ``last_id - since`` ones: finding them
        costs nothing more when many runs are kept.
        """
        records = self._records
        count = min(len(records), max(self.last_id - since, 0))
        if n is not None:
            count = min(count, n)
        out = list(itertools.islice(reversed(records), count))
        out.reverse()
        return out

    def between(
        self, start: float | None = None, stop: float | None = None, count: int | None = None
    ) -> list[TaskRecord]:
        """Finished runs that stopped between ``start`` and ``stop``, oldest first.

        Args:
            start: Seconds since the epoch (scheduler's clock); None: from the oldest kept.
            stop: Seconds since the epoch; None: up to now.
            count: At most this many, the newest.
        """
        out: list[TaskRecord] = []
        for row in reversed(self._records):
            if count is not None and len(out) >= count:
                break
            if stop is not None and row[5] > stop:
                continue
            if start is not None and row[5] < start:
                continue  # rows are nearly, not strictly, in order of their end
            out.append(_record(row))
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


def _record(row: _Row) -> TaskRecord:
    rid, key, worker, sent, start, stop, status, thread, transfers, nbytes, timed = row
    return TaskRecord(
        rid, key, key_prefix(key), worker, sent, start, stop, status, thread,
        tuple((float(t[0]), float(t[1]), str(t[2]), int(t[3])) for t in transfers or ()),
        nbytes, timed,
    )
