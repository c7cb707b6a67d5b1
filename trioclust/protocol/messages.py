"""Every message trioclust's peers exchange, declared once.

Theory of operation
-------------------
A message on the wire is a dict with an ``"op"`` and the fields below (see
docs/protocol.md for the framing around it). Each op is declared here as a
``TypedDict`` whose ``op`` is a ``Literal``: code that builds a message
annotates the literal with its type (``msg: ComputeTaskMsg = {...}``) and a
handler takes its type as its argument, so ``mypy --strict`` checks every
field name and type where messages are made and read, at no cost when they
run (a TypedDict is a plain dict). ``tests/test_messages.py`` checks that
every op the servers and the client send or handle is declared in one of the
channels below, and that every declared op is both sent and handled.

A channel is one kind of link: who speaks, who listens. An op may appear in
two channels with different fields (``update-data`` from a client to the
scheduler names holders, to a worker it carries the data), never twice in one.

``stimulus_id`` travels with every message that causes a transition on its
receiver: the sender names the happening that led to it
(``"update-graph-<client>-<n>"``, ``"task-finished-<key>-<time>"``, ...) and
the receiver's events carry it on, so ``scheduler.story(key)`` and
``worker.story(key)`` tie each transition to its cause across processes.

Requests (sent with :meth:`Link.request`) carry an ``id``; their answer is a
``reply`` (:class:`ReplyMsg`) whose ``result`` is the handler's return value,
declared here too where it is a dict (``...Reply``).

Keys are ``str``, ``int``, ``float`` or tuples of them (:data:`Key`, the
same as :data:`trioclust.core.keys.Key`); the codec carries tuples as tuples,
dict keys included (see codec.py).
"""

from typing import Any, Literal, NotRequired, TypeAlias, TypedDict, get_type_hints

__all__ = [
    "CHANNELS",
    "CLIENT_TO_SCHEDULER",
    "CLIENT_TO_WORKER",
    "COMM",
    "SCHEDULER_TO_CLIENT",
    "SCHEDULER_TO_WORKER",
    "WORKER_TO_SCHEDULER",
    "WORKER_TO_WORKER",
    "Key",
    "op_of",
]

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


# -------------------------------------------------------- client -> scheduler


class UpdateGraphMsg(TypedDict):
    """New tasks, each ``[key, run_spec, dependencies, priority]`` or, for a
    task with placement options, ``[key, run_spec, dependencies, priority,
    options]`` (:class:`TaskOptions`: absent when unused, so the common task
    costs no more bytes), and the keys the client holds futures to. A large
    graph comes in chunks; each chunk's tasks depend only on keys the
    scheduler knows or earlier tasks."""

    op: Literal["update-graph"]
    tasks: list[list[Any]]
    wanted: list[Key]
    stimulus_id: str


class TaskOptions(TypedDict, total=False):
    """A task's placement and retry options, the fifth item of its
    update-graph entry; only the options used are present."""

    workers: list[str]  # addresses, names or hosts it may run on
    allow_other_workers: bool  # ``workers`` is only a preference
    resources: dict[str, float]  # what one run holds, e.g. {"GPU": 1}
    retries: int  # reruns when it raises


class RetryMsg(TypedDict):
    """Request: rerun these erred keys and the erred keys they depend on
    (``Future.retry()``); answered with nothing once they are on their way."""

    op: Literal["retry"]
    keys: list[Key]
    stimulus_id: str


class ReleaseKeysMsg(TypedDict):
    """The client dropped its last future to each of these keys."""

    op: Literal["release-keys"]
    keys: list[Key]
    stimulus_id: str


class UpdateDataMsg(TypedDict):
    """Request: the client scattered these keys to these workers."""

    op: Literal["update-data"]
    who_has: dict[Key, list[str]]
    nbytes: dict[Key, int]
    stimulus_id: str


class WhoHasMsg(TypedDict):
    """Request: the workers holding each key (``{key: [address, ...]}``); a
    key this client does not hold on the scheduler (released, unknown) is
    left out of the reply."""

    op: Literal["who-has"]
    keys: list[Key]


class SchedulerInfoMsg(TypedDict):
    """Request: ``client.scheduler_info()``."""

    op: Literal["scheduler-info"]


class RunOnSchedulerMsg(TypedDict):
    """Request: ``client.run_on_scheduler``."""

    op: Literal["run-on-scheduler"]
    function: object
    args: object
    kwargs: object


class BroadcastMsg(TypedDict):
    """Request: ``client.run``: the scheduler runs the function on ``workers``
    (all when absent) and answers with a :class:`BroadcastReply`."""

    op: Literal["broadcast"]
    function: object
    args: object
    kwargs: object
    workers: NotRequired[list[str] | None]


class BroadcastReply(TypedDict):
    results: dict[str, object]
    errors: dict[str, dict[str, object]]  # {"exception": ..., "text": ...} per worker


class ClientIdMsg(TypedDict):
    """Request: the id the scheduler gave this connection."""

    op: Literal["client-id"]


class WaitForWorkersMsg(TypedDict):
    """Request: answer once ``n`` workers are registered."""

    op: Literal["wait-for-workers"]
    n: int


class RetireWorkersMsg(TypedDict):
    """Request: retire these workers, or ``n`` of them (least data first)."""

    op: Literal["retire-workers"]
    workers: NotRequired[list[str] | None]
    n: NotRequired[int | None]


# ------------------------------------------- cluster managers -> scheduler (deploy/)


class AdaptiveWorkloadMsg(TypedDict):
    """Request: what an adaptive decision needs (core/adaptive.py), answered
    with an :class:`AdaptiveWorkloadReply`."""

    op: Literal["adaptive-workload"]


class AdaptiveWorkloadReply(TypedDict):
    ready: dict[str, int]  # per task prefix: queued and no-worker tasks
    processing: dict[str, int]  # per task prefix: tasks running or sent to a worker
    durations: dict[str, float]  # per task prefix: mean seconds of its recent runs
    workers: list[dict[str, Any]]  # address, nthreads, memory_limit, nbytes, processing


# ------------------------------------- client -> scheduler: client operations


class GetWhoHasMsg(TypedDict):
    """Request: ``client.who_has()``: ``{key: [worker, ...]}`` for these keys
    (every key the scheduler holds when None)."""

    op: Literal["get-who-has"]
    keys: list[Key] | None


class HasWhatMsg(TypedDict):
    """Request: ``client.has_what()``: ``{worker: [key, ...]}`` for these
    workers (all when None)."""

    op: Literal["has-what"]
    workers: list[str] | None


class UploadFileMsg(TypedDict):
    """Request: ``client.upload_file``: every worker, now and joining later,
    gets this file (a ``.py``, ``.zip`` or ``.egg``) on its import path, and
    imports it when ``load``. The answer comes once the current workers have it."""

    op: Literal["upload-file"]
    filename: str  # the file's base name
    data: bytes
    load: bool


class ReplicateMsg(TypedDict):
    """Request: ``client.replicate``: ``n`` copies of each key among ``workers``
    (addresses or names; all when None); answered once the copies are made."""

    op: Literal["replicate"]
    keys: list[Key]
    n: int | None
    workers: list[str] | None


class RebalanceMsg(TypedDict):
    """Request: ``client.rebalance``: even out the bytes of ``keys`` (all when
    None) over ``workers`` (all when None); answered once the moves are done."""

    op: Literal["rebalance"]
    keys: list[Key] | None
    workers: list[str] | None


class RestartMsg(TypedDict):
    """Request: ``client.restart``: every client's futures are released and
    cancelled, every worker restarts (through its nanny; a worker without one
    closes); with ``wait_for_workers``, answered once as many workers are
    back, else once the old ones are gone. ``TimeoutError`` after ``timeout``."""

    op: Literal["restart"]
    timeout: float | None
    wait_for_workers: bool


class RegisterSchedulerPluginMsg(TypedDict):
    """Request: keep this pickled ``SchedulerPlugin`` under ``name`` (replacing
    one of that name unless ``idempotent``, which keeps the old) and call its
    ``start``; a failure there is raised to the client."""

    op: Literal["register-scheduler-plugin"]
    plugin: object
    name: str
    idempotent: bool


class RegisterWorkerPluginMsg(TypedDict):
    """Request: give this pickled ``WorkerPlugin`` to every worker, now and
    joining later; the answer is ``{worker: "OK" or the error's text}``."""

    op: Literal["register-worker-plugin"]
    plugin: object
    name: str
    idempotent: bool


class RegisterNannyPluginMsg(TypedDict):
    """Request: give this pickled ``NannyPlugin`` to every nanny, through its
    worker, now and joining later; the answer is ``{worker: "OK" or the
    error's text}`` for the workers that run under a nanny."""

    op: Literal["register-nanny-plugin"]
    plugin: object
    name: str
    idempotent: bool


class UnregisterPluginMsg(TypedDict):
    """Request: forget the worker plugin (with ``nanny``, the nanny plugin)
    ``name`` and tear it down everywhere; the answer is ``{worker: "OK" or
    the error's text}``. Unknown names are a ``ValueError``."""

    op: Literal["unregister-worker-plugin"]
    name: str
    nanny: bool


class NthreadsMsg(TypedDict):
    """Request: ``client.nthreads()``: ``{worker: threads}`` for these workers
    (all when None)."""

    op: Literal["nthreads"]
    workers: list[str] | None


# ------------------------------------------ client -> scheduler: diagnostics


class GetTaskStreamMsg(TypedDict):
    """Request: finished task runs, as Dask's task stream dicts (a
    :class:`TaskStreamReply`): those with an id over ``since``, else those
    that stopped between ``start`` and ``stop``; at most ``count``, the newest."""

    op: Literal["get-task-stream"]
    start: NotRequired[float | None]
    stop: NotRequired[float | None]
    count: NotRequired[int | None]
    since: NotRequired[int]


class TaskStreamReply(TypedDict):
    records: list[dict[str, Any]]  # key, worker, thread, startstops, status, nbytes, id, prefix
    last_id: int  # the newest run's id (0 before the first)
    time: float  # the scheduler's clock


class GetWorkerHistoryMsg(TypedDict):
    """Request: the workers' heartbeat metrics since ``start`` (scheduler's clock),
    as ``[time, worker, cpu percent, memory bytes]`` rows, oldest first."""

    op: Literal["get-worker-history"]
    start: float


class GetLogsMsg(TypedDict):
    """Request: recent log lines of the scheduler (``workers`` absent) or of
    the workers named (all when ``workers`` is None): ``[[level, line], ...]``,
    or ``{worker: [[level, line], ...]}``."""

    op: Literal["get-logs"]
    n: NotRequired[int | None]
    workers: NotRequired[list[str] | None]
    scheduler: bool


class ProfileMsg(TypedDict):
    """Request: ``client.profile()``: the workers (all, or those named) sample
    their running tasks for ``duration`` seconds; the answer is their merged
    tree of counts, or ``{worker: tree}`` unless ``merge_workers``."""

    op: Literal["profile"]
    duration: float
    interval: float
    workers: NotRequired[list[str] | None]
    merge_workers: bool


# ------------------------------------- client -> scheduler: coordination
# Variables, queues, semaphores (locks), events, multi-locks, datasets (see
# runtime/scheduler_coordination.py). A stored value is a StoredItem: the
# pickled ``value`` (Serialized) and the keys of the futures in it.


class StoredItem(TypedDict):
    value: object  # Serialized
    keys: list[Key]


class CoordinationReply(TypedDict):
    """The answer to a coordination request: ``status`` "OK" with its value,
    "timed-out", "not-held" (a release of a lease not held) or "exists"."""

    status: str
    value: object


class VariableSetMsg(TypedDict):
    op: Literal["variable-set"]
    name: str
    value: object
    keys: list[Key]
    stimulus_id: str


class VariableGetMsg(TypedDict):
    """Request: answered (a StoredItem) once the variable is set, or timed out."""

    op: Literal["variable-get"]
    name: str
    timeout: float | None


class VariableDeleteMsg(TypedDict):
    op: Literal["variable-delete"]
    name: str
    stimulus_id: str


class QueuePutMsg(TypedDict):
    """Request: answered once the value is in the queue (a bounded queue's
    put waits for room), or timed out. ``maxsize`` bounds the queue if this
    is the first request naming it."""

    op: Literal["queue-put"]
    name: str
    value: object
    keys: list[Key]
    timeout: float | None
    maxsize: int
    stimulus_id: str


class QueueGetMsg(TypedDict):
    """Request: one item (waiting for it), or with ``batch`` all of them (or ``n``);
    ``maxsize`` as for queue-put."""

    op: Literal["queue-get"]
    name: str
    timeout: float | None
    batch: bool
    n: int | None
    maxsize: int


class QueueSizeMsg(TypedDict):
    """Request: how many items the queue holds."""

    op: Literal["queue-size"]
    name: str


class SemaphoreCreateMsg(TypedDict):
    op: Literal["semaphore-create"]
    name: str
    max_leases: int


class SemaphoreAcquireMsg(TypedDict):
    """Request: answered True once ``lease`` is granted, or timed out."""

    op: Literal["semaphore-acquire"]
    name: str
    lease: str
    timeout: float | None


class SemaphoreReleaseMsg(TypedDict):
    """Request: release ``lease`` (status "not-held" if it is not)."""

    op: Literal["semaphore-release"]
    name: str
    lease: str


class SemaphoreValueMsg(TypedDict):
    """Request: how many leases are taken."""

    op: Literal["semaphore-value"]
    name: str


class EventSetMsg(TypedDict):
    op: Literal["event-set"]
    name: str
    stimulus_id: str


class EventClearMsg(TypedDict):
    op: Literal["event-clear"]
    name: str
    stimulus_id: str


class EventWaitMsg(TypedDict):
    """Request: answered True once the event is set, or timed out."""

    op: Literal["event-wait"]
    name: str
    timeout: float | None


class EventIsSetMsg(TypedDict):
    op: Literal["event-is-set"]
    name: str


class MultiLockAcquireMsg(TypedDict):
    """Request: answered True once ``num_locks`` of ``names`` (all: None) are taken."""

    op: Literal["multilock-acquire"]
    names: list[str]
    num_locks: int | None
    lease: str
    timeout: float | None


class MultiLockReleaseMsg(TypedDict):
    op: Literal["multilock-release"]
    lease: str


class PublishDatasetMsg(TypedDict):
    """Request: publish these datasets (status "exists" naming taken names
    unless ``override``)."""

    op: Literal["publish-dataset"]
    datasets: dict[str, StoredItem]
    override: bool
    stimulus_id: str


class UnpublishDatasetMsg(TypedDict):
    op: Literal["unpublish-dataset"]
    name: str
    stimulus_id: str


class GetDatasetMsg(TypedDict):
    """Request: the dataset's StoredItem, or None."""

    op: Literal["get-dataset"]
    name: str


class ListDatasetsMsg(TypedDict):
    op: Literal["list-datasets"]


class WantKeysMsg(TypedDict):
    """The client made futures for these keys (got from a variable, queue or
    dataset): it holds them now, and hears of them like of its own."""

    op: Literal["want-keys"]
    keys: list[Key]
    stimulus_id: str


class FireAndForgetMsg(TypedDict):
    """Keep computing these keys until done, whatever the client does."""

    op: Literal["fire-and-forget"]
    keys: list[Key]
    stimulus_id: str


# -------------------------------------------------------- scheduler -> client


class KeysInMemoryMsg(TypedDict):
    """These keys are done; ``types`` names each result's type, ``values``
    carries the small results inline."""

    op: Literal["keys-in-memory"]
    keys: list[Key]
    types: list[str]
    stimulus_id: str
    values: NotRequired[dict[Key, object]]


class KeyErredMsg(TypedDict):
    """``key`` failed (or a task it depends on did)."""

    op: Literal["task-erred"]
    key: Key
    exception: object
    traceback: object
    exception_text: str
    stimulus_id: str


class LostDataMsg(TypedDict):
    """``key``'s result was lost with its workers and is being recomputed."""

    op: Literal["lost-data"]
    key: Key
    stimulus_id: str


class RestartClientMsg(TypedDict):
    """The cluster restarted (``client.restart``): every future is cancelled."""

    op: Literal["restart"]


# ------------------------------------------------------------------- channels


def op_of(message_type: type) -> str:
    """The op a declared message type carries (its ``op`` Literal's value)."""
    hint = get_type_hints(message_type)["op"]
    (op,) = hint.__args__
    return str(op)


def _channel(*types: type) -> dict[str, type]:
    channel: dict[str, type] = {}
    for message_type in types:
        op = op_of(message_type)
        if op in channel:  # pragma: no cover - a declaration mistake
            raise TypeError(f"op {op!r} is declared twice in one channel")
        channel[op] = message_type
    return channel


#: Handshakes and replies, on every link.
COMM = _channel(HandshakeMsg, ReplyMsg)
WORKER_TO_SCHEDULER = _channel(
    RegisterWorkerMsg, TaskStartedMsg, TaskFinishedMsg, TaskErredMsg, MissingDataMsg,
    RescheduleMsg, HeartbeatMsg, UnregisterMsg,
    # tasks that launch tasks
    LongRunningMsg,
    WorkerStatusChangeMsg, ThreadsHeldMsg,
)
SCHEDULER_TO_WORKER = _channel(
    ComputeTaskMsg, FreeKeysMsg, RunMsg, CloseMsg, AcquireReplicasMsg,
    GetWorkerLogsMsg, ProfileWorkerMsg,  # diagnostics
    UploadFileWorkerMsg, RestartWorkerMsg, PluginAddMsg,  # client operations
    NannyPluginAddMsg, PluginRemoveMsg,  # nanny plugins, unregistering plugins
)
#: A worker's own port: peers fetching data, clients gathering and scattering.
WORKER_TO_WORKER = _channel(GetDataMsg)
CLIENT_TO_WORKER = _channel(
    GetDataMsg, ScatterDataMsg,
    ActorExecuteMsg, ActorAttributeMsg,  # actors
)
CLIENT_TO_SCHEDULER = _channel(
    UpdateGraphMsg, ReleaseKeysMsg, UpdateDataMsg, WhoHasMsg, SchedulerInfoMsg,
    RunOnSchedulerMsg, BroadcastMsg, ClientIdMsg, WaitForWorkersMsg, RetireWorkersMsg,
    AdaptiveWorkloadMsg,
    # client operations
    GetWhoHasMsg, HasWhatMsg, NthreadsMsg, UploadFileMsg, ReplicateMsg, RebalanceMsg, RestartMsg,
    RegisterSchedulerPluginMsg, RegisterWorkerPluginMsg,
    RegisterNannyPluginMsg, UnregisterPluginMsg,  # nanny plugins, unregistering plugins
    # diagnostics
    GetTaskStreamMsg, GetWorkerHistoryMsg, GetLogsMsg, ProfileMsg,
    # coordination
    VariableSetMsg, VariableGetMsg, VariableDeleteMsg, QueuePutMsg, QueueGetMsg, QueueSizeMsg,
    SemaphoreCreateMsg, SemaphoreAcquireMsg, SemaphoreReleaseMsg, SemaphoreValueMsg,
    EventSetMsg, EventClearMsg, EventWaitMsg, EventIsSetMsg, MultiLockAcquireMsg,
    MultiLockReleaseMsg, PublishDatasetMsg, UnpublishDatasetMsg, GetDatasetMsg,
    ListDatasetsMsg, WantKeysMsg, FireAndForgetMsg,
    # placement and scheduling controls
    RetryMsg,
)
SCHEDULER_TO_CLIENT = _channel(
    KeysInMemoryMsg, KeyErredMsg, LostDataMsg,
    RestartClientMsg,  # client operations
)

#: Every channel, by name.
CHANNELS: dict[str, dict[str, type]] = {
    "comm": COMM,
    "worker->scheduler": WORKER_TO_SCHEDULER,
    "scheduler->worker": SCHEDULER_TO_WORKER,
    "worker->worker": WORKER_TO_WORKER,
    "client->worker": CLIENT_TO_WORKER,
    "client->scheduler": CLIENT_TO_SCHEDULER,
    "scheduler->client": SCHEDULER_TO_CLIENT,
}
