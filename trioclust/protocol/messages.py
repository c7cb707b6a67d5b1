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

Keys are strings for now (:data:`Key`).
"""

from typing import Any, Literal, NotRequired, TypedDict, get_type_hints

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

#: A task's key.
Key = str


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


class HeartbeatMsg(TypedDict):
    """Request: the worker is alive; here are its metrics."""

    op: Literal["heartbeat"]
    metrics: dict[str, Any]


class HeartbeatReply(TypedDict):
    time: float  # the scheduler's clock when it answered


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
)
SCHEDULER_TO_WORKER = _channel(
    ComputeTaskMsg, FreeKeysMsg, RunMsg, CloseMsg, AcquireReplicasMsg,
    GetWorkerLogsMsg, ProfileWorkerMsg,  # diagnostics
)
#: A worker's own port: peers fetching data, clients gathering and scattering.
WORKER_TO_WORKER = _channel(GetDataMsg)
CLIENT_TO_WORKER = _channel(GetDataMsg, ScatterDataMsg)
CLIENT_TO_SCHEDULER = _channel(
    UpdateGraphMsg, ReleaseKeysMsg, UpdateDataMsg, WhoHasMsg, SchedulerInfoMsg,
    RunOnSchedulerMsg, BroadcastMsg, ClientIdMsg, WaitForWorkersMsg, RetireWorkersMsg,
    AdaptiveWorkloadMsg,
    # diagnostics
    GetTaskStreamMsg, GetWorkerHistoryMsg, GetLogsMsg, ProfileMsg,
    # placement and scheduling controls
    RetryMsg,
)
SCHEDULER_TO_CLIENT = _channel(KeysInMemoryMsg, KeyErredMsg, LostDataMsg)

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
