"""Events: what the runtime tells the sans-IO state machines happened.

Every event is a slotted dataclass, never changed once made (not frozen, for
speed: see instructions.py), with a ``stimulus_id`` naming the
outside happening that caused it, so a log of events can be replayed. Values
the core never looks inside (a task's ``run_spec``, a pickled exception, an
inline result) are typed ``object``: the core passes them through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from trioclust.core.keys import Key

# --------------------------------------------------------------- scheduler side


@dataclass(slots=True, kw_only=True)
class NewTask:
    """One task of a graph a client submits (not an event by itself).

    ``workers``, ``allow_other_workers`` and ``resources`` restrict where it
    runs (scheduler_placement.py); ``retries`` reruns it when it raises.
    """

    key: Key
    run_spec: object
    dependencies: tuple[Key, ...] = ()
    priority: int = 0
    workers: tuple[str, ...] = ()
    allow_other_workers: bool = False
    resources: Mapping[str, float] | None = None
    retries: int = 0


@dataclass(slots=True, kw_only=True)
class AddWorker:
    address: str
    nthreads: int
    name: str = ""
    memory_limit: int = 0
    resources: Mapping[str, float] | None = None
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class RemoveWorker:
    """A worker left. ``expected`` is True for a requested, graceful close;
    only unexpected departures count against a task's ``allowed_failures``."""

    address: str
    reason: str = ""
    expected: bool = False
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class AddClient:
    client: str
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class RemoveClient:
    client: str
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class UpdateGraph:
    """A client submits tasks and says which keys it wants (holds futures to)."""

    client: str
    tasks: tuple[NewTask, ...]
    wanted: tuple[Key, ...]
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class ReleaseKeys:
    """A client no longer holds futures to these keys."""

    client: str
    keys: tuple[Key, ...]
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class WantKeys:
    """A client takes a new hold on keys the scheduler already knows."""

    client: str
    keys: tuple[Key, ...]
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class UpdateData:
    """A client scattered data straight to workers: ``who_has`` maps each key
    to the workers now holding it, ``nbytes`` gives its size."""

    client: str
    who_has: Mapping[Key, tuple[str, ...]]
    nbytes: Mapping[Key, int] = field(default_factory=dict)
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class TaskFinished:
    """``worker`` computed ``key``. ``told``: clients the runtime already sent
    the result to, ahead of this event (see :meth:`SchedulerState.result_waiters`),
    which are not told again."""

    worker: str
    key: Key
    nbytes: int = 0
    type_name: str = ""
    value: object = None  # a small result carried inline, or None
    told: tuple[str, ...] = ()
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class TaskErred:
    worker: str
    key: Key
    exception: object
    traceback: object = None
    exception_text: str = ""
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class MissingData:
    """``worker`` could not get ``key`` from ``errant_worker``."""

    worker: str
    key: Key
    errant_worker: str
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class RescheduleTask:
    """``worker`` gives ``key`` back: it could not gather its dependencies."""

    worker: str
    key: Key
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class TaskStarted:
    """``worker`` handed ``key`` to a thread (or its event loop) to run.

    Only tasks that had started count a death of their worker against
    ``allowed_failures``; those merely queued there do not.
    """

    worker: str
    key: Key
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class AddReplicas:
    """``worker`` now holds copies of ``keys``: it fetched them (``AcquireReplicas``)
    so that ``retiring`` can leave. Keys not in memory any more are to be
    dropped there."""

    worker: str
    keys: tuple[Key, ...]
    retiring: str = ""
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class ReplicasFailed:
    """``worker`` could not copy what ``AcquireReplicas`` asked for ``retiring``
    (it left, or did not answer in time); ``retiring`` leaves all the same."""

    worker: str
    retiring: str
    reason: str = ""
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class RetireWorkers:
    """Retire these workers gracefully: keys only they hold are copied to the
    others first (``AcquireReplicas``), then each is told to close
    (``CloseWorker``). :meth:`SchedulerState.workers_to_retire` chooses them
    when a count is asked for."""

    workers: tuple[str, ...]
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class Replicate:
    """``client.replicate``: give each of ``keys`` ``n`` holders among ``workers``
    (all workers, and as many holders as workers, when None): copies are
    asked for (``AcquireReplicas``) and extra ones dropped (``FreeKeys``)."""

    keys: tuple[Key, ...]
    n: int | None = None
    workers: tuple[str, ...] | None = None
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class Rebalance:
    """``client.rebalance``: even out the bytes of ``keys`` (all when None) held
    by ``workers`` (all when None): a key moves by a copy (``AcquireReplicas``),
    then its old copy is dropped once ``AddReplicas`` says the new one is there."""

    keys: tuple[Key, ...] | None = None
    workers: tuple[str, ...] | None = None
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class RetryTasks:
    """``client`` asks to rerun these erred keys, and the erred keys they
    depend on (``Future.retry()``)."""

    client: str
    keys: tuple[Key, ...]
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class StealLook:
    """The runtime's periodic look for stranded tasks
    (``scheduler.work-stealing-interval``; see scheduler_stealing.py)."""

    stimulus_id: str


# ------------------------------------------------------------------ worker side


@dataclass(slots=True, kw_only=True)
class ComputeRequested:
    """The scheduler asks this worker to compute ``key``. ``who_has`` maps each
    dependency to the workers holding it (possibly this worker itself)."""

    key: Key
    run_spec: object
    who_has: Mapping[Key, tuple[str, ...]] = field(default_factory=dict)
    nbytes: Mapping[Key, int] = field(default_factory=dict)
    priority: int = 0
    resources: Mapping[str, float] | None = None  # held while it executes
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class FreeRequested:
    """The scheduler no longer needs these keys here: drop data, cancel work."""

    keys: tuple[Key, ...]
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class ExecuteSucceeded:
    key: Key
    value: object
    nbytes: int = 0
    type_name: str = ""
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class ExecuteFailed:
    key: Key
    exception: object
    traceback: object = None
    exception_text: str = ""
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class GatherSucceeded:
    """Data arrived from ``peer``; the keys asked for and not in ``data`` are
    ones the peer did not have."""

    peer: str
    data: Mapping[Key, object]
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class GatherFailed:
    """``peer`` could not be reached or broke off while sending ``keys``."""

    peer: str
    keys: tuple[Key, ...]
    reason: str = ""
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class SlotsChanged:
    """The runtime now takes up to ``slots`` tasks at once (running, or queued
    for its threads: it deepens that queue while tasks are short)."""

    slots: int
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class DataUpdated:
    """A client scattered data to this worker."""

    data: Mapping[Key, object]
    nbytes: Mapping[Key, int] = field(default_factory=dict)
    stimulus_id: str


# ------------------------------------------------ tasks that launch tasks


@dataclass(slots=True, kw_only=True)
class TaskSeceded:
    """``key``, running on ``worker``, seceded (``secede()``, ``worker_client``):
    it waits on other tasks and no longer counts against the worker's threads."""

    worker: str
    key: Key
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class Seceded:
    """(Worker) the task ``key`` left its thread slot: its thread is replaced,
    and the slot takes another task."""

    key: Key
    stimulus_id: str



# ------------------------------------------ worker memory and held threads


@dataclass(slots=True, kw_only=True)
class WorkerPaused:
    """``worker`` paused (``paused``: its memory is over the pause threshold,
    ``reason`` says by how much) or resumed: while paused, it gets no new task."""

    worker: str
    paused: bool
    reason: str = ""
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class ThreadsHeld:
    """``held`` of ``worker``'s threads still run tasks that were cancelled
    (a thread cannot be stopped): it has that many fewer for new tasks."""

    worker: str
    held: int
    stimulus_id: str


@dataclass(slots=True, kw_only=True)
class PauseChanged:
    """The worker's memory monitor paused it (start no task) or resumed it."""

    paused: bool
    stimulus_id: str

SchedulerEvent = (
    AddWorker | RemoveWorker | AddClient | RemoveClient | UpdateGraph | ReleaseKeys
    | WantKeys | UpdateData | TaskFinished | TaskErred | MissingData | RescheduleTask
    | AddReplicas | TaskStarted | RetireWorkers | ReplicasFailed | TaskSeceded
    | WorkerPaused | ThreadsHeld
    | Replicate | Rebalance
    | RetryTasks | StealLook
)
WorkerEvent = (
    ComputeRequested | FreeRequested | ExecuteSucceeded | ExecuteFailed | GatherSucceeded
    | GatherFailed | DataUpdated | SlotsChanged | Seceded
    | PauseChanged
)
