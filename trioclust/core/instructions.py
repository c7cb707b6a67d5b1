"""Instructions: what the state machines ask the runtime to do.

Each is a slotted dataclass that nothing changes once it is made; the runtime
turns it into a message on a link or a child task in its nursery. Comparing
lists of instructions is how ``tests/core`` checks decisions. Not
``frozen=True``: a frozen dataclass's ``__init__`` sets every field through
``object.__setattr__``, 2.4 times the cost of a plain one, and the scheduler
makes several of these per task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# --------------------------------------------------------------- scheduler side


@dataclass(slots=True, kw_only=True)
class ComputeTask:
    """Ask ``worker`` to compute ``key``; ``who_has`` locates its dependencies."""

    worker: str
    key: str
    run_spec: object
    who_has: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    nbytes: Mapping[str, int] = field(default_factory=dict)
    priority: int = 0
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class FreeKeys:
    """Tell ``worker`` to drop these keys: their data, or their running work.

    ``cancel`` is True when the keys are work given to that worker (queued or
    running) that must stop; False when they are data or records nobody needs
    any more, which nothing waits for.
    """

    worker: str
    keys: tuple[str, ...]
    stimulus_id: str = ""
    cancel: bool = False


@dataclass(slots=True, kw_only=True)
class KeyInMemory:
    """Tell ``client`` its key is done. ``value`` is the inline result or None."""

    client: str
    key: str
    type_name: str = ""
    value: object = None
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class KeyErred:
    """Tell ``client`` its key failed (or depends on a key that failed)."""

    client: str
    key: str
    exception: object
    traceback: object = None
    exception_text: str = ""
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class KeyLost:
    """Tell ``client`` that its key's data was lost and is being recomputed."""

    client: str
    key: str
    stimulus_id: str = ""


# ------------------------------------------------------------------ worker side


@dataclass(slots=True, kw_only=True)
class Execute:
    """Run the task ``key``: its run_spec and dependencies are in the state."""

    key: str
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class CancelExecute:
    """Cancel the running task ``key`` where that is possible (coroutines)."""

    key: str
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class Gather:
    """Fetch ``keys`` from the worker at ``peer``, in one request."""

    peer: str
    keys: tuple[str, ...]
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class SendTaskFinished:
    key: str
    nbytes: int = 0
    type_name: str = ""
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class SendTaskErred:
    key: str
    exception: object
    traceback: object = None
    exception_text: str = ""
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class SendMissingData:
    key: str
    errant_worker: str
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class SendReschedule:
    key: str
    stimulus_id: str = ""


SchedulerInstruction = ComputeTask | FreeKeys | KeyInMemory | KeyErred | KeyLost
WorkerInstruction = (
    Execute | CancelExecute | Gather | SendTaskFinished | SendTaskErred | SendMissingData
    | SendReschedule
)
