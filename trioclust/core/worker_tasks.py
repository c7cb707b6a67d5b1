"""The record a worker keeps for each key it deals with, and the states it can be in."""

# Theory of operation
# ===================
#
# ``WorkerState`` (worker_state.py) owns these records and is the only code
# that writes to them; the runtime reads them. A ``WorkerTask`` is a plain
# mutable record with ``__slots__``; links between records point at the
# records themselves (``dependencies``, ``dependents``, ``waiting_for_data``),
# so following them costs no dictionary look-ups.
#
# Records
# -------
# ``WorkerState.tasks`` holds one ``WorkerTask`` per key the worker deals
# with, in one of
#   waiting    a task to compute here; some dependency is not in ``data`` yet
#   fetch      a dependency to get from a peer (``who_has`` lists candidates)
#   flight     a dependency being fetched from ``peer``
#   ready      a task whose dependencies are all in ``data``, waiting for a
#              thread; a heap orders them by (priority, arrival)
#   executing  running in a thread (its key is in ``executing``)
#   memory     the value is in ``data``
#   error      it raised; the scheduler was told and will free it
#   cancelled  freed while executing or in flight: the thread or transfer
#              cannot be stopped, so its result is dropped on arrival,
#              unless the scheduler asks for the key again meanwhile
# and records leave ``tasks`` altogether once nothing needs them
# ("forgotten"; ``released`` is the brief state of a record being built).

from __future__ import annotations

from collections.abc import Mapping

from trioclust.core.keys import Key

__all__ = [
    "CANCELLED",
    "ERROR",
    "EXECUTING",
    "FETCH",
    "FLIGHT",
    "FORGOTTEN",
    "MEMORY",
    "READY",
    "RELEASED",
    "WAITING",
    "WorkerTask",
]

RELEASED = "released"
WAITING = "waiting"
FETCH = "fetch"
FLIGHT = "flight"
READY = "ready"
EXECUTING = "executing"
MEMORY = "memory"
ERROR = "error"
CANCELLED = "cancelled"
FORGOTTEN = "forgotten"


class WorkerTask:
    """What a worker knows about one key.

    Attributes:
        key: The key.
        state: See the module's theory of operation.
        run_spec: What to run (requested tasks), passed through untouched.
        priority: Lower runs (and is fetched) first.
        seq: Arrival order; breaks ties between equal priorities.
        requested: The scheduler asked for this key here (computed or
            scattered): report it and keep it until freed.
        dependencies: Records of the keys this task needs, until it has run.
        dependents: Local tasks that still need this key.
        waiting_for_data: The dependencies not yet in ``data``.
        who_has: Peers that hold this key (fetch, flight, cancelled records).
        peer: The peer it is being fetched from (flight).
        previous: What a cancelled record was doing: executing or flight.
        nbytes: The size of the value.
        type_name: The type of the value.
        exception: The opaque exception object (state error).
        traceback: The opaque traceback (state error).
        exception_text: A printable form of the exception.
        resources: What one run holds of the worker's resources (None: nothing).
    """

    __slots__ = (
        "dependencies",
        "dependents",
        "exception",
        "exception_text",
        "key",
        "nbytes",
        "peer",
        "previous",
        "priority",
        "requested",
        "resources",
        "run_spec",
        "seq",
        "state",
        "traceback",
        "type_name",
        "waiting_for_data",
        "who_has",
    )

    def __init__(self, key: Key, *, priority: int, seq: int) -> None:
        self.key = key
        self.state = RELEASED
        self.run_spec: object = None
        self.priority = priority
        self.seq = seq
        self.requested = False
        self.resources: Mapping[str, float] | None = None
        self.dependencies: dict[WorkerTask, None] = {}
        self.dependents: dict[WorkerTask, None] = {}
        self.waiting_for_data: set[WorkerTask] = set()
        self.who_has: list[str] = []
        self.peer: str | None = None
        self.previous: str | None = None
        self.nbytes = 0
        self.type_name = ""
        self.exception: object = None
        self.traceback: object = None
        self.exception_text = ""

    def __repr__(self) -> str:
        return f"<WorkerTask {self.key!r} {self.state}>"
