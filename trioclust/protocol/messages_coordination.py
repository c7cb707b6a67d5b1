"""The coordination messages a client sends the scheduler: variables,
queues, semaphores (locks), events, multi-locks, datasets, fire-and-forget.
Declared as protocol/messages.py says (which re-exports them and groups them
in channels).
"""

from typing import Literal, TypedDict

from trioclust.protocol.messages_peers import Key

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
