"""Values stored on the scheduler (variables, queues, datasets) with the
futures in them: pickled with each future replaced by its key, and back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioclust.client.futures import Future
from trioclust.client.graph_messages import stimulus_id
from trioclust.client.results import deserialized
from trioclust.protocol import messages as msgs
from trioclust.protocol import serialize
from trioclust.protocol.messages import Key

if TYPE_CHECKING:
    from trioclust.client.client import Client


class StoredFuture:
    """Stands for a future inside a stored value (pickled in its place)."""

    __slots__ = ("key",)

    def __init__(self, key: Key) -> None:
        self.key = key

    def __reduce__(self) -> Any:
        return (StoredFuture, (self.key,))


def replace(obj: Any, swap: Any) -> Any:
    if isinstance(obj, list | tuple | set | frozenset):
        return type(obj)(replace(item, swap) for item in obj)
    if isinstance(obj, dict):
        return {k: replace(v, swap) for k, v in obj.items()}
    return swap(obj)


def pack(value: Any) -> tuple[object, list[Key]]:
    """``value`` pickled for the scheduler, futures in it (also inside lists,
    tuples, sets and dicts) by their keys; and those keys."""
    keys: list[Key] = []

    def swap(obj: Any) -> Any:
        if isinstance(obj, Future):
            keys.append(obj.key)
            return StoredFuture(obj.key)
        return obj

    return serialize(replace(value, swap)), keys


def unpack(client: Client, item: msgs.StoredItem) -> Any:
    """A stored value back, with a future of ``client`` for each stored one.

    The scheduler already counts these keys as wanted by this client; the
    ``want-keys`` message makes it tell the client their state too.
    """
    value = deserialized(item["value"])
    if not item["keys"]:
        return value
    core = client._core

    def swap(obj: Any) -> Any:
        return Future(obj.key, core) if isinstance(obj, StoredFuture) else obj

    result = replace(value, swap)
    want: msgs.WantKeysMsg = {
        "op": "want-keys", "keys": list(dict.fromkeys(item["keys"])), "stimulus_id": stimulus_id("want-keys"),
    }
    core.send(want)
    return result


