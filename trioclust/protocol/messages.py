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

The declarations live in three modules by who speaks (messages_peers.py:
between servers and to a worker's port; messages_client.py: client and
scheduler; messages_coordination.py: coordination requests); this module
re-exports every one of them, so code names a message ``msgs.FooMsg`` with
``from trioclust.protocol import messages as msgs``, and groups them in
channels.

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

# ruff: noqa: F405 - the channels name the types the star imports re-export
from typing import get_type_hints

from trioclust.protocol.messages_client import *  # noqa: F403 - re-exported, see above
from trioclust.protocol.messages_coordination import *  # noqa: F403
from trioclust.protocol.messages_peers import *  # noqa: F403
from trioclust.protocol.messages_peers import Key

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
