"""The messages between servers, and the ones a client sends to a worker's
port: handshakes and replies on any link, worker <-> scheduler, a worker's
data port, actor calls. Declared as protocol/messages.py says (which
re-exports them and groups them in channels).
"""

from typing import Any, Literal, NotRequired, TypeAlias, TypedDict

#: A task's key: ``str``, ``int``, ``float`` or a tuple of keys (declared
#: again here, identically, because protocol/ sits below core/).
Key: TypeAlias = "str | int | float | tuple[Key, ...]"


# ------------------------------------------------------------------ any link


class HandshakeMsg(TypedDict):
    """The first message on every connection, both ways (comm.py)."""

    op: Literal["handshake"]
    protocol: int
    role: str
    name: str


class ReplyMsg(TypedDict):
    """The answer to a request: its ``result``, or the handler's exception."""

    op: Literal["reply"]
    id: int
    status: Literal["OK", "error"]
    result: NotRequired[Any]
    exception: NotRequired[object]  # a pickled exception (Serialized)
    text: NotRequired[str]  # "TypeName: message"
    traceback: NotRequired[str]


# -------------------------------------------------------- worker -> scheduler


class RegisterWorkerMsg(TypedDict):
    """Request: a worker joins (or rejoins) the cluster."""

    op: Literal["register-worker"]
    address: str
    nthreads: int
    name: str
    memory_limit: int
    metrics: dict[str, Any]
    pid: int
    stimulus_id: str
    resources: NotRequired[dict[str, float]]  # Worker(resources=...); absent: none


class RegisterWorkerReply(TypedDict):
    scheduler: str  # the scheduler's id
    address: str
    time: float  # the scheduler's clock when it answered (the worker's offset to it)


class TaskStartedMsg(TypedDict):
    """The worker hands ``key`` to a thread (or its loop) now."""

    op: Literal["task-started"]
    key: Key
    stimulus_id: str


class TaskFinishedMsg(TypedDict):
    """``key`` is in memory on the worker; a small result travels inline."""

    op: Literal["task-finished"]
    key: Key
    nbytes: int
    type: str  # the result's type name
    stimulus_id: str
    value: NotRequired[object]
    # timings (see "Task timings" below); absent when the code never ran
    start: NotRequired[float]
    stop: NotRequired[float]
    thread: NotRequired[int]
    transfers: NotRequired[list[list[Any]]]


class TaskErredMsg(TypedDict):
    """``key`` raised on the worker."""

    op: Literal["task-erred"]
    key: Key
    exception: object  # pickled (Serialized)
    traceback: object  # tblib's dict of the remote traceback, or None
    exception_text: str  # "TypeName: message"
    stimulus_id: str
    # timings, as in TaskFinishedMsg
    start: NotRequired[float]
    stop: NotRequired[float]
    thread: NotRequired[int]
    transfers: NotRequired[list[list[Any]]]


# Task timings: ``start`` and ``stop`` bound the run of the task's code, ``thread``
# is the ident of the thread that ran it (the event loop's for a coroutine),
# and ``transfers`` lists ``[start, stop, source worker, nbytes]`` for each
# dependency fetched from a peer for this task. The worker measures them on
# its own clock and adds its estimate of the offset to the scheduler's clock
# (from the ``time`` in the register and heartbeat replies) before sending,
# so every time here is on the scheduler's clock.


class MissingDataMsg(TypedDict):
    """The worker could not get ``key`` from ``errant_worker``, which the
    scheduler believes holds it."""

    op: Literal["missing-data"]
    key: Key
    errant_worker: str
    stimulus_id: str


class RescheduleMsg(TypedDict):
    """The worker gives ``key`` back: none of its dependencies' holders answered."""

    op: Literal["reschedule"]
    key: Key
    stimulus_id: str


class LongRunningMsg(TypedDict):
    """``key`` seceded (``secede()``): it waits on other tasks and occupies
    none of the worker's threads."""

    op: Literal["long-running"]
    key: Key
    stimulus_id: str


class HeartbeatMsg(TypedDict):
    """Request: the worker is alive; here are its metrics."""

    op: Literal["heartbeat"]
    metrics: dict[str, Any]


class HeartbeatReply(TypedDict):
    time: float  # the scheduler's clock when it answered


# -- worker memory and held threads (issue 18) --


class WorkerStatusChangeMsg(TypedDict):
    """The worker paused (its memory is over ``worker.memory.pause``;
    ``reason`` says by how much) or resumed running: a paused worker gets no
    new task."""

    op: Literal["worker-status-change"]
    status: Literal["paused", "running"]
    reason: str
    stimulus_id: str


class ThreadsHeldMsg(TypedDict):
    """``held`` of the worker's threads run tasks that were cancelled and
    have not returned yet: it has that many fewer for new tasks."""

    op: Literal["threads-held"]
    held: int
    stimulus_id: str


class UnregisterMsg(TypedDict):
    """The worker is closing on purpose: its departure is expected."""

    op: Literal["unregister"]


# -------------------------------------------------------- scheduler -> worker


class ComputeTaskMsg(TypedDict):
    """Run ``key``; ``who_has`` locates its dependencies (absent: none)."""

    op: Literal["compute-task"]
    key: Key
    run_spec: object
    priority: int
    stimulus_id: str
    who_has: NotRequired[dict[Key, list[str]]]
    nbytes: NotRequired[dict[Key, int]]
    resources: NotRequired[dict[str, float]]  # held while it runs; absent: none


class FreeKeysMsg(TypedDict):
    """Drop these keys here: their data, or their queued or running work."""

    op: Literal["free-keys"]
    keys: list[Key]
    stimulus_id: str


class RunMsg(TypedDict):
    """Request: ``client.run``, a function called on the worker's loop."""

    op: Literal["run"]
    function: object  # pickled
    args: object
    kwargs: object


class CloseMsg(TypedDict):
    """The scheduler retires this worker."""

    op: Literal["close"]
    reason: str


class AcquireReplicasMsg(TypedDict):
    """Request: copy these keys from the workers named for each."""

    op: Literal["acquire-replicas"]
    who_has: dict[Key, list[str]]
    stimulus_id: str


class AcquireReplicasReply(TypedDict):
    keys: list[Key]  # those copied


class UploadFileWorkerMsg(TypedDict):
    """Put this file on the worker's import path (and import it when ``load``):
    a request for ``client.upload_file``; a plain message to a worker that
    registers afterwards, ahead of any task."""

    op: Literal["upload-file"]
    filename: str
    data: bytes
    load: bool


class RestartWorkerMsg(TypedDict):
    """``client.restart``: stop now; a nanny starts a fresh worker process."""

    op: Literal["restart"]


class PluginAddMsg(TypedDict):
    """Set up this pickled ``WorkerPlugin`` under ``name`` (tearing down one of
    that name first): a request for ``register_plugin``; a plain message to a
    worker that registers afterwards, ahead of any task."""

    op: Literal["plugin-add"]
    plugin: object
    name: str


# nanny plugins and unregistering plugins (issue 17)


class NannyPluginAddMsg(TypedDict):
    """Hand this pickled ``NannyPlugin`` to the nanny that runs this worker,
    which sets it up under ``name`` (unless it holds the same plugin already):
    a request for ``register_plugin``, answered ``None`` by a worker without
    a nanny, else ``{"status": "OK" or the error's text, "restart": bool}``;
    a plain message to a worker that registers afterwards."""

    op: Literal["nanny-plugin-add"]
    plugin: object
    name: str


class PluginRemoveMsg(TypedDict):
    """Request: tear down the worker plugin (or, with ``nanny``, the nanny
    plugin) ``name``; the answer is ``"OK"`` or the teardown error's text."""

    op: Literal["plugin-remove"]
    name: str
    nanny: bool


class ProfileWorkerMsg(TypedDict):
    """Request: sample the stacks of the threads running tasks for ``duration``
    seconds, every ``interval``; the answer is the tree of counts
    (runtime/profiling.py)."""

    op: Literal["profile"]
    duration: float
    interval: float


class GetWorkerLogsMsg(TypedDict):
    """Request: the worker's recent log lines, ``[[level, line], ...]``, oldest first."""

    op: Literal["get-logs"]
    n: NotRequired[int | None]


# ------------------------------------------- worker or client -> a worker's port


class GetDataMsg(TypedDict):
    """Request: the values of these keys (a peer's fetch, a client's gather)."""

    op: Literal["get-data"]
    keys: list[Key]


class GetDataReply(TypedDict):
    data: dict[Key, object]
    missing: list[Key]


class ScatterDataMsg(TypedDict):
    """Request: keep these values (a client's scatter)."""

    op: Literal["update-data"]
    data: dict[Key, object]


class ScatterDataReply(TypedDict):
    nbytes: dict[Key, int]


# ------------------------------------------------ client -> a worker's port: actors


class ActorExecuteMsg(TypedDict):
    """Call ``method`` of the actor ``key`` held here with the pickled
    ``args`` and ``kwargs``; the answer is a ``reply`` with id ``call`` (the
    caller's ``Link.expect_reply``): the pickled result, or the method's
    exception. Calls run one at a time, in the order they came, on the
    worker's actor thread, which writes the reply (runtime/actor_calls.py)."""

    op: Literal["actor-execute"]
    key: Key
    method: str
    args: object
    kwargs: object
    call: int


class ActorAttributeMsg(TypedDict):
    """The pickled value of ``attribute`` of the actor ``key`` held here, read
    in order with the calls before it; answered as ``actor-execute`` is."""

    op: Literal["actor-attribute"]
    key: Key
    attribute: str
    call: int
