"""The records the scheduler keeps: one ``TaskState`` per key, one ``WorkerInfo`` per worker."""

# Theory of operation
# ===================
#
# These are plain mutable records with ``__slots__``: ``SchedulerState`` owns
# them and is the only code that writes to them; the runtime and the dashboard
# read them. They hold no logic beyond a few derived values.
#
# Links between tasks point at the ``TaskState`` objects themselves, not at
# keys, so following the graph costs no dictionary look-ups. ``dependencies``
# and ``dependents`` are *ordered* sets (dicts whose values are ``None``):
# every decision that walks them then comes out the same on every run,
# whatever the hash seed, so a recorded log of events replays exactly. The
# sets of strings (``who_has``, ``who_wants``, ``processing``, ``has_what``)
# are only tested for membership or sorted before they are walked.
#
# Memory: a scheduler may hold millions of tasks, most of them pending, so a
# TaskState is kept small. ``dependencies`` is a tuple (fixed once the task
# is linked). The four sets start as the shared empty frozenset ``EMPTY`` and
# stay *interned frozensets* while small (``SmallSets``): 100,000 tasks that
# one client wants and that wait on one slow task share one
# ``frozenset({client})`` and one ``frozenset({slow})`` instead of holding
# 400,000 sets of 216 bytes each. A set that outgrows ``SMALL_SET`` becomes an
# ordinary mutable ``set`` (the waiters of a task with 100,000 dependents).
# Readers see a set either way; writers go through ``SmallSets.add`` and
# ``SmallSets.discard``, which return the object to store back. An empty
# ``dependents`` is the shared ``NO_DEPENDENTS`` until a dependent is linked.
#
# Two back-links make the "is this task still needed?" question O(1):
# ``waiters`` is the set of dependents that are active (waiting, queued,
# no-worker or processing) and so still need this task's data;
# ``waiting_on`` is, for a waiting task, the set of dependencies not yet in
# memory.

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any, TypeVar

from trioclust.core.keys import Key

_T = TypeVar("_T", bound=Hashable)
_H = TypeVar("_H", bound=Hashable)

#: The empty set every task's sets start as (shared, immutable).
EMPTY: frozenset[Any] = frozenset()

#: The empty ``dependents`` of a task nothing depends on (shared: written only
#: through ``link_dependent``, which replaces it first).
NO_DEPENDENTS: dict[Any, None] = {}

#: Sets up to this size stay interned frozensets; larger ones are mutable sets.
SMALL_SET = 8

# A set is a ``frozenset`` (small, shared, replaced on change) or a ``set``
# (large, changed in place).
AnySet = frozenset[_T] | set[_T]


class SmallSets:
    """Adds to and discards from task sets, interning the small ones.

    Each operation returns the set to store back into the task (the same
    object when it is a mutable ``set``). The table of interned sets is
    bounded: when it grows past ``limit`` it is emptied, which only ends the
    sharing of sets made before (they stay valid). Its entries keep the tasks
    in them alive until then; a forgotten task has dropped its run_spec and
    exception, so what they keep is small, and the scheduler empties the table
    whenever it holds no tasks.
    """

    __slots__ = ("_limit", "_table")

    def __init__(self, limit: int = 16384) -> None:
        self._table: dict[Any, Any] = {}  # frozensets and tuples, each to itself
        self._limit = limit

    def _intern(self, new: _H) -> _H:
        # a tuple and a frozenset are never equal, so both share one table
        table = self._table
        found: _H | None = table.get(new)
        if found is not None:
            return found
        if len(table) >= self._limit:
            table.clear()
        table[new] = new
        return new

    def clear(self) -> None:
        """Forget every interned set (the sets themselves stay valid)."""
        self._table.clear()

    def tuple(self, items: tuple[_T, ...]) -> tuple[_T, ...]:
        """``items``, or an equal tuple interned before (small tuples only)."""
        if len(items) > SMALL_SET:
            return items
        return self._intern(items)

    def add(self, current: AnySet[_T], item: _T) -> AnySet[_T]:
        """``current`` with ``item`` in it."""
        if isinstance(current, set):
            current.add(item)
            return current
        if item in current:
            return current
        if len(current) >= SMALL_SET:
            grown = set(current)
            grown.add(item)
            return grown
        return self._intern(current | {item})

    def discard(self, current: AnySet[_T], item: _T) -> AnySet[_T]:
        """``current`` without ``item``."""
        if isinstance(current, set):
            current.discard(item)
            return current
        if item not in current:
            return current
        if len(current) == 1:
            return EMPTY
        return self._intern(current - {item})

def address_host(address: str) -> str:
    """The host of ``scheme://host:port`` (``[v6]`` without brackets), or the
    location itself when it has no port (``inproc://name``)."""
    location = address.split("://", 1)[-1]
    if location.startswith("["):
        return location[1:].split("]", 1)[0]
    host, sep, port = location.rpartition(":")
    return host if sep and port.isdigit() else location


RELEASED = "released"
WAITING = "waiting"
QUEUED = "queued"
NO_WORKER = "no-worker"
PROCESSING = "processing"
MEMORY = "memory"
ERRED = "erred"
FORGOTTEN = "forgotten"

#: The states a task held in ``SchedulerState.tasks`` can be in.
TASK_STATES = (RELEASED, WAITING, QUEUED, NO_WORKER, PROCESSING, MEMORY, ERRED)

#: States of a task that will still run: its dependencies must stay available.
ACTIVE_STATES = frozenset({WAITING, QUEUED, NO_WORKER, PROCESSING})


class Restrictions:
    """Where one task may run: what ``workers=``, ``allow_other_workers=`` and
    ``resources=`` asked for (see scheduler_placement.py).

    Attributes:
        workers: Addresses, names or hosts of the workers it may run on
            (empty: any).
        loose: ``allow_other_workers``: ``workers`` is a preference; any
            worker will do when none of them is there.
        resources: How much of each resource one run takes (empty: none).
    """

    __slots__ = ("loose", "resources", "workers")

    def __init__(
        self,
        workers: frozenset[str] = frozenset(),
        *,
        loose: bool = False,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        self.workers = workers
        self.loose = loose
        self.resources: Mapping[str, float] = dict(resources) if resources else {}

    def __repr__(self) -> str:
        return (
            f"<Restrictions workers={sorted(self.workers)} loose={self.loose} "
            f"resources={dict(self.resources)}>"
        )


class TaskState:
    """What the scheduler knows about one key.

    Attributes:
        key: The task's key.
        run_spec: The opaque description of the work, passed through untouched
            (``None`` for scattered data, see ``has_run_spec``).
        has_run_spec: False for data a client scattered: it cannot be recomputed.
        priority: Lower runs first.
        seq: Creation order; breaks ties between equal priorities.
        state: One of ``TASK_STATES`` (``"forgotten"`` once removed).
        dependencies: The tasks whose results this one needs (a tuple, in order).
        dependents: The tasks that need this one's result (ordered set:
            a dict with ``None`` values).
        waiters: The active dependents that still need this task's data.
        waiting_on: For a waiting task, the dependencies not yet in memory.
        who_wants: The clients that hold a future to this key.
        who_has: The addresses of the workers holding the result (state memory).
        processing_on: The worker running the task (state processing), or None.
        nbytes: The size of the result, as the worker reported it.
        type_name: The type of the result, as the worker reported it.
        exception: The opaque exception object (state erred).
        traceback: The opaque traceback object (state erred).
        exception_text: A printable form of the exception.
        exception_blame: The key whose failure made this task err (itself, or
            a dependency).
        suspicious: How many workers died while running this task.
        started: The order in which its worker reported its start (1 for the
            first report this scheduler had), 0 before: its worker handed it
            to a thread, which runs them in that order.
        restrictions: Where it may run (``workers=``, ``resources=``), or
            None for anywhere (see scheduler_placement.py).
        retries: How many more times it is rerun when it raises.
    """

    __slots__ = (
        "dependencies",
        "dependents",
        "exception",
        "exception_blame",
        "exception_text",
        "has_run_spec",
        "key",
        "nbytes",
        "priority",
        "processing_on",
        "restrictions",
        "retries",
        "run_spec",
        "seq",
        "started",
        "state",
        "suspicious",
        "traceback",
        "type_name",
        "waiters",
        "waiting_on",
        "who_has",
        "who_wants",
    )

    def __init__(
        self, key: Key, run_spec: object, *, priority: int, seq: int, has_run_spec: bool = True
    ) -> None:
        self.key = key
        self.run_spec = run_spec
        self.has_run_spec = has_run_spec
        self.priority = priority
        self.seq = seq
        self.state = RELEASED
        self.dependencies: tuple[TaskState, ...] = ()
        self.dependents: dict[TaskState, None] = NO_DEPENDENTS
        self.waiters: AnySet[TaskState] = EMPTY
        self.waiting_on: AnySet[TaskState] = EMPTY
        self.who_wants: AnySet[str] = EMPTY
        self.who_has: AnySet[str] = EMPTY
        self.processing_on: WorkerInfo | None = None
        self.nbytes = 0
        self.type_name = ""
        self.exception: object = None
        self.traceback: object = None
        self.exception_text = ""
        self.exception_blame: Key | None = None
        self.suspicious = 0
        self.started = 0
        self.restrictions: Restrictions | None = None
        self.retries = 0

    def link_dependent(self, dependent: TaskState) -> None:
        """Record that ``dependent`` needs this task's result."""
        if self.dependents is NO_DEPENDENTS:
            self.dependents = {}
        self.dependents[dependent] = None

    def set_exception(
        self, exception: object, traceback: object, text: str, blame: Key | None
    ) -> None:
        """Record why this task failed (or which dependency's failure it inherits).

        Args:
            exception: The opaque exception object.
            traceback: The opaque traceback, or None.
            text: A printable form of the exception.
            blame: The key whose failure this is.
        """
        self.exception = exception
        self.traceback = traceback
        self.exception_text = text
        self.exception_blame = blame

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state}>"


class WorkerInfo:
    """What the scheduler knows about one worker.

    Attributes:
        address: Where the worker listens; its identity.
        nthreads: How many tasks it runs at once.
        name: A human-friendly name, possibly empty.
        memory_limit: Bytes, 0 for no limit.
        processing: Keys of the tasks sent to it and not yet finished.
        long_running: The keys of ``processing`` that seceded: they wait on
            other tasks and occupy none of its threads.
        has_what: Keys of the results it holds.
        nbytes_stored: Total size of ``has_what``.
        capacity: How many tasks without dependencies it may run before more
            wait on the scheduler (``inf`` when saturation is off).
        root_capacity: The same for *root tasks* (tasks without dependencies
            that other tasks depend on: a reduction's leaves) while the worker
            stores more than ``root_bytes``.
        root_bytes: ``memory_limit`` times the root memory fraction (``inf``
            without a memory limit).
        stamp: Bumped whenever ``processing`` changes; the lowest stamp wins a
            tie between equally occupied workers, which spreads work evenly.
        paused: Its memory is over the pause threshold: it gets no new task.
        paused_reason: What it said when it paused (its memory, the limit).
        held: Threads still running tasks that were cancelled; the worker has
            ``nthreads - held`` for new ones.
        host: The host part of ``address`` (``workers=`` may name it).
        resources: What it has of each resource (``Worker(resources=...)``).
        nstarted: How many of ``processing`` it reported started (the rest
            wait there for a thread and may be stolen).
    """

    __slots__ = (
        "address",
        "capacity",
        "has_what",
        "held",
        "host",
        "long_running",
        "memory_limit",
        "name",
        "nbytes_stored",
        "nstarted",
        "nthreads",
        "paused",
        "paused_reason",
        "processing",
        "resources",
        "root_bytes",
        "root_capacity",
        "saturation",
        "stamp",
    )

    def __init__(
        self,
        address: str,
        nthreads: int,
        *,
        name: str = "",
        memory_limit: int = 0,
        worker_saturation: float = math.inf,
        resources: Mapping[str, float] | None = None,
        root_saturation: float = math.inf,
        root_memory_fraction: float = 0.0,
    ) -> None:
        self.address = address
        self.host = address_host(address)
        self.resources: dict[str, float] = dict(resources) if resources else {}
        self.nstarted = 0
        self.nthreads = nthreads
        self.name = name
        self.memory_limit = memory_limit
        self.processing: set[Key] = set()
        self.long_running: set[Key] = set()
        self.has_what: set[Key] = set()
        self.nbytes_stored = 0
        self.saturation = worker_saturation
        self.paused = False
        self.paused_reason = ""
        self.held = 0
        self.capacity = _capacity(nthreads, worker_saturation)
        self.root_capacity = min(self.capacity, _capacity(nthreads, root_saturation))
        self.root_bytes = memory_limit * root_memory_fraction if memory_limit else math.inf
        self.stamp = 0

    def set_held(self, held: int) -> None:
        """``held`` threads run cancelled tasks: fewer are free, and so is capacity."""
        self.held = held = max(0, held)
        free = max(self.nthreads, 1) - held
        if free <= 0:
            self.capacity = 0
        elif math.isinf(self.saturation):
            self.capacity = math.inf
        else:
            self.capacity = max(1, math.ceil(free * self.saturation))

    @property
    def accepting(self) -> bool:
        """Whether it may be given new tasks: not paused, and a thread free."""
        return not self.paused and self.held < max(self.nthreads, 1)

    @property
    def busy(self) -> int:
        """Tasks that occupy its threads: ``processing`` less ``long_running``."""
        return len(self.processing) - len(self.long_running)

    @property
    def occupancy(self) -> float:
        """Tasks in flight (and threads held) per thread, less the seceded
        ones: the measure of how busy the worker is."""
        return (len(self.processing) - len(self.long_running) + self.held) / max(self.nthreads, 1)

    def __repr__(self) -> str:
        return f"<WorkerInfo {self.address!r} processing={len(self.processing)}>"


def _capacity(nthreads: int, saturation: float) -> float:
    """``ceil(nthreads * saturation)``, at least 1; ``inf`` when saturation is off."""
    if math.isinf(saturation):
        return math.inf
    return max(1, math.ceil(max(nthreads, 1) * saturation))
