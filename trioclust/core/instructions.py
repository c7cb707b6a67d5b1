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

from trioclust.core.keys import Key

# --------------------------------------------------------------- scheduler side


@dataclass(slots=True, kw_only=True)
class ComputeTask:
    """Ask ``worker`` to compute ``key``; ``who_has`` locates its dependencies."""

    worker: str
    key: Key
    run_spec: object
    who_has: Mapping[Key, tuple[str, ...]] = field(default_factory=dict)
    nbytes: Mapping[Key, int] = field(default_factory=dict)
    priority: int = 0
    stimulus_id: str = ""
    #: What one run holds of the worker's resources (None: nothing).
    resources: Mapping[str, float] | None = None
    #: Write it at once. False while the worker has more tasks than threads:
    #: it is busy, so this one may wait for its link's next batch (comm.linger).
    #: A delivery hint, left out of comparisons.
    urgent: bool = field(default=True, compare=False)


@dataclass(slots=True, kw_only=True)
class FreeKeys:
    """Tell ``worker`` to drop these keys: their data, or their running work.

    ``cancel`` is True when the keys are work given to that worker (queued or
    running) that must stop; False when they are data or records nobody needs
    any more, which nothing waits for.
    """

    worker: str
    keys: tuple[Key, ...]
    stimulus_id: str = ""
    cancel: bool = False

    @property
    def lazy(self) -> bool:
        """Whether it may wait for the link's next batch (within comm.lazy-linger):
        dropping data nothing waits for must not wake an idle worker, which would
        take a core from the task in flight; cancelling work must not wait."""
        return not self.cancel


@dataclass(slots=True, kw_only=True)
class KeyInMemory:
    """Tell ``client`` its key is done. ``value`` is the inline result or None."""

    client: str
    key: Key
    type_name: str = ""
    value: object = None
    stimulus_id: str = ""
    #: Write it at once. False while other tasks are processing: more results
    #: follow, and may join its batch (comm.linger). Left out of comparisons.
    urgent: bool = field(default=True, compare=False)


@dataclass(slots=True, kw_only=True)
class KeyErred:
    """Tell ``client`` its key failed (or depends on a key that failed)."""

    client: str
    key: Key
    exception: object
    traceback: object = None
    exception_text: str = ""
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class KeyLost:
    """Tell ``client`` that its key's data was lost and is being recomputed."""

    client: str
    key: Key
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class AcquireReplicas:
    """Ask ``worker`` to copy ``who_has``'s keys from the workers named for each,
    so that ``retiring`` can leave without losing them; answer with
    ``AddReplicas`` (or ``ReplicasFailed``) naming ``retiring``."""

    worker: str
    who_has: Mapping[Key, tuple[str, ...]]
    retiring: str
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class CloseWorker:
    """Tell ``worker`` to close: it is retired, and nothing only it holds is lost."""

    worker: str
    reason: str
    stimulus_id: str = ""


# ------------------------------------------------------------------ worker side


@dataclass(slots=True, kw_only=True)
class Execute:
    """Run the task ``key``: its run_spec and dependencies are in the state."""

    key: Key
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class CancelExecute:
    """Cancel the running task ``key`` where that is possible (coroutines)."""

    key: Key
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class Gather:
    """Fetch ``keys`` from the worker at ``peer``, in one request."""

    peer: str
    keys: tuple[Key, ...]
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class SendTaskFinished:
    key: Key
    nbytes: int = 0
    type_name: str = ""
    stimulus_id: str = ""
    #: Write it at once. False while other tasks still execute here: more
    #: results follow soon and may join its batch. Left out of comparisons.
    urgent: bool = field(default=True, compare=False)


@dataclass(slots=True, kw_only=True)
class SendTaskErred:
    key: Key
    exception: object
    traceback: object = None
    exception_text: str = ""
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class SendMissingData:
    key: Key
    errant_worker: str
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class SendReschedule:
    key: Key
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class SendLongRunning:
    """Tell the scheduler ``key`` seceded: it no longer occupies a thread here."""

    key: Key
    stimulus_id: str = ""


SchedulerInstruction = (
    ComputeTask | FreeKeys | KeyInMemory | KeyErred | KeyLost | AcquireReplicas | CloseWorker
)
WorkerInstruction = (
    Execute | CancelExecute | Gather | SendTaskFinished | SendTaskErred | SendMissingData
    | SendReschedule | SendLongRunning
)
