"""Published datasets: named futures (or any values) kept on the scheduler for
every client (``client.publish_dataset``, ``client.datasets``), as in Dask.

A published future stays computed after the client that published it goes,
until it is unpublished; ``get_dataset`` gives the caller's client a future
of its own for it.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from trioclust.client.graph_messages import stimulus_id
from trioclust.client.stored import pack, unpack
from trioclust.protocol import messages as msgs

if TYPE_CHECKING:
    from trioclust.client.client import Client


async def publish(client: Client, datasets: dict[str, Any], override: bool) -> None:
    items: dict[str, msgs.StoredItem] = {}
    for name, value in datasets.items():
        packed, keys = pack(value)
        items[name] = {"value": packed, "keys": keys}
    reply = await client._core.request(
        "publish-dataset", datasets=items, override=override, stimulus_id=stimulus_id("publish-dataset")
    )
    if reply["status"] != "OK":
        raise KeyError(f"Dataset {', '.join(reply['value'])} already exists (pass override=True to replace)")


async def get(client: Client, name: str, default: Any) -> Any:
    item = await client._core.request("get-dataset", name=name)
    if item is None:
        if default is _MISSING:
            raise KeyError(f"Dataset '{name}' not found")
        return default
    return unpack(client, item)


async def unpublish(client: Client, name: str) -> None:
    msg: msgs.UnpublishDatasetMsg = {
        "op": "unpublish-dataset", "name": name, "stimulus_id": stimulus_id("unpublish-dataset")
    }
    client._core.send(msg)


_MISSING: Any = object()


class Datasets(MutableMapping[str, Any]):
    """``client.datasets``: the published datasets as a mapping, shared by
    every client of the scheduler (a synchronous client only)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __getitem__(self, name: str) -> Any:
        return self._client.get_dataset(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self._client.publish_dataset(value, name=name)

    def __delitem__(self, name: str) -> None:
        self._client.unpublish_dataset(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._client.list_datasets())

    def __len__(self) -> int:
        return len(self._client.list_datasets())

    def __contains__(self, name: object) -> bool:
        return name in self._client.list_datasets()
