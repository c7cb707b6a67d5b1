"""Data between a worker, its peers and clients: ``get-data`` and
``update-data`` (scatter) on the worker's own listener, and fetches from
peers (the core's ``Gather``, the scheduler's ``acquire-replicas``): a mixin
of :class:`~trioclust.runtime.worker.Worker`.

Theory of operation
-------------------
A fetch is one ``get-data`` request over a pooled link
(:class:`~trioclust.comm.pool.ConnectionPool`), given at most
``worker.fetch-timeout``. A value goes out as it is only if msgpack carries
it exactly (a plain scalar); anything else is pickled whole (see
``_on_get_data``). The spill store is told the size of each value before it
is stored (``_expect_sizes``). A gather's outcome becomes ``GatherSucceeded``
or ``GatherFailed``, dropped if the worker's state was reset meanwhile
(``_generation``); each key's fetch (start, stop, peer, size) waits in
``_transfers`` until a task that needed it runs, and goes out with that
task's timings (runtime/worker_execution.py).

A fetched value whose unpickling raises here (a class that will not load on
this worker) is stored as an :class:`Unloadable` holding the exception: the
tasks that need it err with that exception when they would run (as in Dask,
where the failed fetch fails the task) instead of waiting for a value that
never comes, and a peer or client fetching it from here gets the same error
when it unpickles it.
"""

from __future__ import annotations

import logging
import pickle
import time
from typing import TYPE_CHECKING, Any

import trio

from trioclust import config
from trioclust.core import events as ev
from trioclust.core.keys import Key
from trioclust.errors import CommClosedError, ProtocolError, RemoteError
from trioclust.protocol import Serialized, serialize
from trioclust.protocol import messages as msgs

if TYPE_CHECKING:
    from trioclust.comm.pool import ConnectionPool
    from trioclust.core.worker_state import WorkerState
    from trioclust.runtime.spill import SpillStore

logger = logging.getLogger("trioclust.worker")

# transfer timings kept for dependencies no task here has used yet, at most
_MAX_PENDING_TRANSFERS = 4096

# values a worker sends a peer as they are: msgpack carries these, exactly
_SENT_AS_IS = frozenset({bytes, str, int, float, bool, type(None)})


class Unloadable:
    """Stands in a worker's store for a fetched value whose unpickling raised
    here (see the module's notes): ``error`` is that exception."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:
            error = RuntimeError(f"{type(error).__name__}: {error}")
        self.error = error

    def __reduce__(self) -> tuple[Any, tuple[BaseException]]:
        return (_reraise, (self.error,))


def _reraise(error: BaseException) -> Any:
    """Unpickling an :class:`Unloadable` raises its exception again."""
    raise error


class DataTransfers:
    """The Worker's data transfers (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Worker's

        name: str | None
        state: WorkerState
        _generation: int
        _pool: ConnectionPool | None
        _store: SpillStore | None
        _transfers: dict[Key, list[Any]]
        _unloadable: dict[Key, Unloadable]

        def _handle(self, *events: Any) -> None: ...

    def _on_get_data(self, msg: msgs.GetDataMsg) -> msgs.GetDataReply:
        data = self.state.data
        # Anything but a plain scalar is pickled whole: the codec would send a
        # container as msgpack with only the objects inside pickled (and the
        # receiver unpickles top-level values only: a dask reduction's
        # {"n": array, ...} chunk), and a subclass of a msgpack type as its
        # base type (a dask shuffle's groups, a dict subclass, would arrive a
        # dict of still-pickled frames)
        found = {
            k: v if type(v) in _SENT_AS_IS else serialize(v)
            for k in msg["keys"] if k in data for v in (data[k],)
        }
        missing = [k for k in msg["keys"] if k not in data]
        return {"data": found, "missing": missing}

    def _on_update_data(self, msg: msgs.ScatterDataMsg) -> msgs.ScatterDataReply:
        values = {
            k: (v.deserialize() if isinstance(v, Serialized) else v) for k, v in msg["data"].items()
        }
        nbytes = {
            k: (v.nbytes if isinstance(v, Serialized) else len(v) if isinstance(v, bytes) else 0)
            for k, v in msg["data"].items()
        }
        self._expect_sizes(nbytes)
        self._handle(ev.DataUpdated(data=values, nbytes=nbytes, stimulus_id=f"update-data-{time.time()}"))
        return {"nbytes": nbytes}

    async def _fetch(self, peer: str, keys: list[Key]) -> tuple[dict[Key, Any], list[Key], dict[Key, int]]:
        """Values of ``keys`` from ``peer``: (data, keys it lacked, sizes).

        Raises ``TimeoutError`` (an ``OSError``) if the peer does not answer
        within ``worker.fetch-timeout``, and forgets the connection to it."""
        assert self._pool is not None
        timeout = config.get_float("worker.fetch-timeout")
        with trio.move_on_after(timeout) as waited:
            link = await self._pool.get(peer)
            reply = await link.request("get-data", keys=keys)
        if waited.cancelled_caught:
            self._pool.forget(peer)
            raise TimeoutError(
                f"{peer} did not answer a fetch of {len(keys)} key(s) within {timeout:g} s "
                f"(worker.fetch-timeout)"
            )
        data: dict[Key, Any] = {}
        nbytes: dict[Key, int] = {}
        for k, v in reply["data"].items():
            if isinstance(v, Serialized):
                nbytes[k] = v.nbytes
                try:
                    v = v.deserialize()
                except Exception as exc:
                    logger.warning(
                        "Worker %s could not unpickle %r fetched from %s: %s: %s; the tasks "
                        "that need it err with that", self.name, k, peer, type(exc).__name__, exc,
                    )
                    v = self._unloadable[k] = Unloadable(exc)
            elif isinstance(v, bytearray | memoryview):
                v = bytes(v)  # a bytes value, sent out of band (see _on_get_data)
            data[k] = v
        return data, list(reply.get("missing") or ()), nbytes

    def _expect_sizes(self, nbytes: dict[Key, int]) -> None:
        store = self._store
        if store is not None:
            for key, n in nbytes.items():
                if n:
                    store.expect_size(key, n)

    async def _gather(self, peer: str, keys: tuple[Key, ...], generation: int) -> None:
        try:
            start = time.time()
            data, _, nbytes = await self._fetch(peer, list(keys))
            self._expect_sizes(nbytes)
            if generation == self._generation:
                self._note_transfers(start, time.time(), peer, nbytes, data)
            event: Any = ev.GatherSucceeded(peer=peer, data=data, stimulus_id=f"gather-{peer}")
        except (OSError, CommClosedError, ProtocolError, RemoteError) as exc:
            logger.warning("Worker %s could not gather %d keys from %s: %s", self.name, len(keys), peer, exc)
            event = ev.GatherFailed(peer=peer, keys=keys, reason=str(exc), stimulus_id=f"gather-failed-{peer}")
        if generation == self._generation:
            self._handle(event)

    def _note_transfers(
        self, start: float, stop: float, peer: str, nbytes: dict[Key, int], data: dict[Key, Any]
    ) -> None:
        """Keep each fetched key's transfer for the task that needed it (see ``_execute``)."""
        pending = self._transfers
        for key, value in data.items():
            size = nbytes.get(key)
            if size is None:  # bytes travel as a frame of their own, unpickled
                size = len(value) if isinstance(value, bytes | bytearray) else 0
            pending[key] = [start, stop, peer, size]
        while len(pending) > _MAX_PENDING_TRANSFERS:  # fetched for tasks that never ran here
            del pending[next(iter(pending))]

    async def _on_acquire_replicas(self, msg: msgs.AcquireReplicasMsg) -> msgs.AcquireReplicasReply:
        """Copy keys from the workers holding them (another worker is retiring)."""
        by_peer: dict[str, list[Key]] = {}
        for key, holders in msg["who_has"].items():
            if holders:
                by_peer.setdefault(holders[0], []).append(key)
        got: list[Key] = []
        for peer, keys in by_peer.items():
            try:
                data, _, nbytes = await self._fetch(peer, keys)
            except (OSError, CommClosedError, ProtocolError, RemoteError) as exc:
                logger.warning("Worker %s could not copy %d keys from %s: %s", self.name, len(keys), peer, exc)
                continue
            self._expect_sizes(nbytes)
            self._handle(ev.DataUpdated(data=data, nbytes=nbytes, stimulus_id=msg["stimulus_id"]))
            got.extend(data)
        return {"keys": got}
