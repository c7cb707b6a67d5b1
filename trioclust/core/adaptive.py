"""Adaptive scaling: how many workers the work needs, and when to let some go.

Theory of operation
-------------------
The scheduler measures (:func:`measure`) and a cluster's adaptive loop
decides (:class:`AdaptiveState`); neither does I/O here. Every ``interval``
the loop asks the scheduler for a :class:`Workload` (a request over the wire,
so a remote scheduler answers the same way) and hands it to
:meth:`AdaptiveState.handle` as a :class:`Measured` event, which answers with
instructions: :class:`ScaleUp` (start workers up to ``n``) or
:class:`RetireWorkers` (retire these, their data moved first).

The target is Dask's rule (``Scheduler.adaptive_target``):

* the expected duration of the work, over ``target_duration``: each
  processing or ready (queued, no-worker) task counts the mean duration of
  its prefix's recent runs, or ``unknown_duration`` before one has run;
* capped by the number of tasks that could run at once, then divided by the
  mean threads per worker;
* at least one worker while work waits and none is there;
* twice the workers when the stored data passes 60% of the memory limits;
* clipped to ``[minimum, maximum]``.

Scaling up happens at once. Scaling down happens only after ``wait_count``
consecutive decisions named the same worker: the idle workers (nothing
processing) holding the least data are the candidates, so a short lull does
not tear down a warm cluster. Every decision is kept in :attr:`AdaptiveState.log`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trioclust.core.keys import Key

if TYPE_CHECKING:
    from trioclust.core.scheduler_state import SchedulerState

__all__ = [
    "AdaptiveInstruction",
    "AdaptiveState",
    "Decision",
    "Measured",
    "RetireWorkers",
    "ScaleUp",
    "WorkerLoad",
    "Workload",
    "adaptive_target",
    "measure",
]

#: Fraction of the workers' memory limits that, once stored, doubles the target.
MEMORY_PRESSURE = 0.6


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLoad:
    """One worker, as adaptivity sees it."""

    address: str
    nthreads: int
    memory_limit: int
    nbytes: int
    processing: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """What the scheduler reports for an adaptive decision.

    Attributes:
        ready: per task prefix, tasks waiting for a thread (queued, no worker).
        processing: per task prefix, tasks sent to workers and not finished.
        durations: per task prefix, the mean seconds of its recent runs.
        workers: every registered worker.
    """

    ready: dict[str, int] = field(default_factory=dict)
    processing: dict[str, int] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    workers: tuple[WorkerLoad, ...] = ()


def measure(
    state: SchedulerState, durations: dict[str, float], prefix: Callable[[Key], str]
) -> Workload:
    """The :class:`Workload` of a scheduler's state.

    Args:
        state: the scheduler's state.
        durations: mean seconds per prefix of recent runs (the runtime times them).
        prefix: a key's prefix, the same function that grouped ``durations``.
    """
    ready: dict[str, int] = {}
    processing: dict[str, int] = {}
    for ts in state.tasks.values():
        if ts.state == "queued" or ts.state == "no-worker":
            group = prefix(ts.key)
            ready[group] = ready.get(group, 0) + 1
        elif ts.state == "processing":
            group = prefix(ts.key)
            processing[group] = processing.get(group, 0) + 1
    workers = tuple(
        WorkerLoad(
            address=ws.address, nthreads=ws.nthreads, memory_limit=ws.memory_limit or 0,
            nbytes=ws.nbytes_stored, processing=len(ws.processing),
        )
        for ws in state.workers.values()
    )
    return Workload(ready=ready, processing=processing, durations=dict(durations), workers=workers)


def adaptive_target(load: Workload, target_duration: float, unknown_duration: float) -> int:
    """Workers the work needs (Dask's ``adaptive_target``, before min/max)."""

    def expected(counts: dict[str, int]) -> float:
        return sum(n * load.durations.get(p, unknown_duration) for p, n in counts.items())

    cpu = math.ceil((expected(load.processing) + expected(load.ready)) / target_duration)
    runnable = sum(load.ready.values()) + sum(load.processing.values())
    cpu = min(cpu, runnable)  # a few long tasks do not ask for many cores
    workers = load.workers
    if workers:
        nthreads = sum(w.nthreads for w in workers)
        cpu = math.ceil(cpu / max(nthreads, 1) * len(workers))
    elif load.ready:
        cpu = max(1, cpu)
    limit = sum(w.memory_limit for w in workers)
    used = sum(w.nbytes for w in workers)
    memory = 2 * len(workers) if limit > 0 and used > MEMORY_PRESSURE * limit else 0
    return max(cpu, memory)


# ------------------------------------------------------ events and instructions


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    """The scheduler's workload at ``now``; ``planned``: workers the cluster
    runs or is starting (registered or not)."""

    workload: Workload
    planned: int
    now: float
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleUp:
    """Start workers until the cluster plans ``n``."""

    n: int
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetireWorkers:
    """Retire these workers gracefully (their data moves first), then stop them."""

    workers: tuple[str, ...]
    stimulus_id: str


AdaptiveInstruction = ScaleUp | RetireWorkers


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """One adaptive decision, for the log: ``action`` is ``"up"``, ``"down"`` or ``"same"``."""

    time: float
    action: str
    target: int
    planned: int
    workers: tuple[str, ...] = ()
    stimulus_id: str = ""

    def __str__(self) -> str:
        what = f" {', '.join(self.workers)}" if self.workers else ""
        return (
            f"adaptive: {self.action} (target {self.target}, planned {self.planned}){what} "
            f"[{self.stimulus_id}]"
        )


class AdaptiveState:
    """Adaptive decisions, sans I/O.

    Args:
        minimum: fewest workers.
        maximum: most workers.
        wait_count: consecutive decisions naming a worker before it is retired.
        target_duration: seconds the work should take.
        unknown_duration: seconds assumed for a task whose prefix never ran.
        log_length: decisions kept in :attr:`log`.
    """

    def __init__(
        self,
        *,
        minimum: int = 0,
        maximum: float = math.inf,
        wait_count: int = 3,
        target_duration: float = 5.0,
        unknown_duration: float = 0.5,
        log_length: int = 1000,
    ) -> None:
        if minimum < 0 or maximum < minimum:
            raise ValueError(f"need 0 <= minimum <= maximum, got minimum={minimum}, maximum={maximum}")
        if wait_count < 1:
            raise ValueError(f"wait_count must be 1 or more, got {wait_count}")
        if target_duration <= 0:
            raise ValueError(f"target_duration must be positive, got {target_duration}")
        self.minimum = minimum
        self.maximum = maximum
        self.wait_count = wait_count
        self.target_duration = target_duration
        self.unknown_duration = unknown_duration
        #: consecutive decisions that named each worker for retirement
        self.close_counts: dict[str, int] = {}
        #: the latest decisions, oldest first
        self.log: deque[Decision] = deque(maxlen=log_length)

    def target(self, load: Workload) -> int:
        """The clipped number of workers ``load`` needs."""
        raw = adaptive_target(load, self.target_duration, self.unknown_duration)
        return int(max(self.minimum, min(self.maximum, raw)))

    def handle(self, event: Measured) -> list[AdaptiveInstruction]:
        """Decide on one measurement."""
        target = self.target(event.workload)
        stim = event.stimulus_id
        out: list[AdaptiveInstruction] = []
        retire: tuple[str, ...] = ()
        if target > event.planned:
            self.close_counts.clear()
            out.append(ScaleUp(n=target, stimulus_id=stim))
            action = "up"
        elif target < event.planned:
            idle = sorted(
                (w for w in event.workload.workers if w.processing == 0),
                key=lambda w: (w.nbytes, w.address),
            )
            candidates = [w.address for w in idle[: event.planned - target]]
            counts = {a: self.close_counts.get(a, 0) + 1 for a in candidates}
            self.close_counts = counts
            retire = tuple(a for a in candidates if counts[a] >= self.wait_count)
            if retire:
                for address in retire:
                    del counts[address]
                out.append(RetireWorkers(workers=retire, stimulus_id=stim))
                action = "down"
            else:
                action = "same"
        else:
            self.close_counts.clear()
            action = "same"
        self.log.append(
            Decision(
                time=event.now, action=action, target=target, planned=event.planned,
                workers=retire, stimulus_id=stim,
            )
        )
        return out
