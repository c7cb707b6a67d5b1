"""The messages between a client (or a cluster manager) and the scheduler,
coordination aside (protocol/messages_coordination.py): graphs, releases,
questions, client operations, diagnostics, and what the scheduler tells a
client. Declared as protocol/messages.py says (which re-exports them and
groups them in channels).
"""

from typing import Any, Literal, NotRequired, TypedDict

from trioclust.protocol.messages_peers import Key

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
