"""Coordination primitives, as in Dask: ``Variable``, ``Queue``, ``Lock``,
``Semaphore``, ``Event``, ``MultiLock`` and ``fire_and_forget``.

Each object is a name on the scheduler (see core/coordination.py); several
objects with one name, in any client or task, are the same variable, queue,
lock... They use the client given, else :func:`get_client` when first used
(in a task: its worker's client), and pickle as their name, so they can be
passed to tasks. Methods that wait return an awaitable with an asynchronous
client, the value with a synchronous one. Their state lives on the scheduler
and outlives the client that made it; futures stored in a variable, a queue
(or a published dataset) stay computed until taken out.

Waiting is bounded by the ``timeout`` each call takes: the scheduler gives
the request up after it and says so (``TimeoutError``, or False for the
acquires and ``Event.wait``, as in Dask).
"""

from __future__ import annotations

import uuid
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from trioclust.client.futures import Future
from trioclust.client.graph_messages import stimulus_id
from trioclust.client.stored import pack, replace, unpack
from trioclust.client.worker_client import get_client
from trioclust.protocol import messages as msgs
from trioclust.protocol.messages import Key

if TYPE_CHECKING:
    from trioclust.client.client import Client


class _Held:
    """``with x:`` / ``async with x:`` for what has ``acquire`` and ``release``
    (awaitable with an asynchronous client)."""

    def acquire(self) -> Any:
        raise NotImplementedError

    def release(self) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()


class _Named:
    """A named object on the scheduler, used through a client."""

    _prefix = "object"

    def __init__(self, name: str | None = None, client: Client | None = None) -> None:
        self.name = name or f"{self._prefix}-{uuid.uuid4().hex}"
        self._client = client

    @property
    def client(self) -> Client:
        """The client it uses (``get_client()`` when none was given)."""
        if self._client is None:
            self._client = get_client()
        return self._client

    def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` (a coroutine function) on the client: an awaitable with
        an asynchronous client, the result with a synchronous one."""
        return self.client._sync(fn, *args, **kwargs)

    def _send(self, msg: Any) -> Any:
        """Send now, while the caller still holds the futures in ``msg``
        (their releases must not pass it); awaitable with an asynchronous client."""
        client = self.client
        client._call_in_loop(client._core.send, msg)
        return _done() if client.asynchronous else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.name}>"

    def __reduce__(self) -> Any:
        return (type(self), (self.name,))


async def _done() -> None:
    return None


def _then(client: Client, awaitable_or_value: Any, fn: Any) -> Any:
    """``fn(result)``: at once with a synchronous client, after the await with
    an asynchronous one."""
    if not client.asynchronous:
        return fn(awaitable_or_value)

    async def later() -> Any:
        return fn(await awaitable_or_value)

    return later()


def _timed_out(kind: str, name: str, timeout: float | None) -> TimeoutError:
    return TimeoutError(f"Timed out after {timeout} s waiting for {kind} {name!r}")


# ------------------------------------------------------------------ Variable


class Variable(_Named):
    """A named value on the cluster that any client or task can set and get
    (``dask.distributed.Variable``).

    Args:
        name: its name; the same name is the same variable everywhere.
            Default: a new unique one.
        client: the client to use; default :func:`get_client`.

    Example:
        >>> var = Variable("stopping-criterion")
        >>> var.set(False)
        >>> var.get()
        False

    A future stored in a variable stays computed until the variable is set
    to something else or deleted; ``get`` gives a future of the caller's client.
    """

    _prefix = "variable"

    def set(self, value: Any) -> Any:
        """Store ``value`` (a future, or any picklable value)."""
        packed, keys = pack(value)
        msg: msgs.VariableSetMsg = {
            "op": "variable-set", "name": self.name, "value": packed, "keys": keys,
            "stimulus_id": stimulus_id("variable-set"),
        }
        return self._send(msg)

    def get(self, timeout: float | None = None) -> Any:
        """The value, waiting for it to be set.

        Raises:
            TimeoutError: when it is not set within ``timeout`` seconds.
        """
        client = self.client
        return client._sync(self._get, client, timeout)

    async def _get(self, client: Client, timeout: float | None) -> Any:
        reply = await client._core.request("variable-get", name=self.name, timeout=timeout)
        if reply["status"] != "OK":
            raise _timed_out("variable", self.name, timeout)
        return unpack(client, reply["value"])

    def delete(self) -> Any:
        """Forget the value (and release a stored future)."""
        msg: msgs.VariableDeleteMsg = {
            "op": "variable-delete", "name": self.name, "stimulus_id": stimulus_id("variable-delete")
        }
        return self._send(msg)


# --------------------------------------------------------------------- Queue


class Queue(_Named):
    """A named first-in first-out queue on the cluster (``dask.distributed.Queue``).

    Args:
        name: its name; the same name is the same queue everywhere.
        client: the client to use; default :func:`get_client`.
        maxsize: the most items it holds (0: no limit); a ``put`` waits for
            room. The first put or get that reaches the scheduler for a
            name makes the queue, with its ``maxsize``; later ones keep it.

    Futures put in a queue stay computed until someone gets them. The queue
    lives on the scheduler and outlives the client that made it.
    """

    _prefix = "queue"

    def __init__(self, name: str | None = None, client: Client | None = None, maxsize: int = 0) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be 0 (no limit) or more, got {maxsize}")
        super().__init__(name, client)
        self.maxsize = maxsize

    def put(self, value: Any, timeout: float | None = None) -> Any:
        """Append ``value`` (a future, or any picklable value), waiting while
        the queue is full.

        Raises:
            TimeoutError: when no room came within ``timeout`` seconds (the
                value is not put).
        """
        client = self.client
        return client._sync(self._put, client, value, timeout)

    async def _put(self, client: Client, value: Any, timeout: float | None) -> None:
        packed, keys = pack(value)
        reply = await client._core.request(
            "queue-put", name=self.name, value=packed, keys=keys, timeout=timeout,
            maxsize=self.maxsize, stimulus_id=stimulus_id("queue-put"),
        )
        if reply["status"] != "OK":
            raise _timed_out("room in queue", self.name, timeout)

    def get(self, timeout: float | None = None, batch: bool | int = False) -> Any:
        """The oldest item, waiting for one; ``batch=True``: every item there
        now (a list, maybe empty); ``batch=n``: a list of ``n`` items,
        waiting until there are.

        Raises:
            TimeoutError: when nothing came within ``timeout`` seconds.
        """
        client = self.client
        return client._sync(self._get, client, timeout, batch)

    async def _get(self, client: Client, timeout: float | None, batch: bool | int) -> Any:
        n = None if isinstance(batch, bool) else int(batch)
        reply = await client._core.request(
            "queue-get", name=self.name, timeout=timeout, batch=batch is not False, n=n,
            maxsize=self.maxsize,
        )
        if reply["status"] != "OK":
            raise _timed_out("an item of queue", self.name, timeout)
        items = [unpack(client, item) for item in reply["value"]]
        return items if batch is not False else items[0]

    def qsize(self) -> Any:
        """How many items the queue holds now."""
        return self._run(self.client._core.request, "queue-size", name=self.name)

    def __reduce__(self) -> Any:
        return (type(self), (self.name, None, self.maxsize))


# ----------------------------------------------------------- Semaphore, Lock


class Semaphore(_Held, _Named):
    """At most ``max_leases`` holders at once, cluster-wide
    (``dask.distributed.Semaphore``).

    Args:
        max_leases: how many may hold it at once.
        name: its name; the same name is the same semaphore everywhere.
        client: the client to use; default :func:`get_client`.

    A lease belongs to the client that took it (in a task: its worker's);
    when that client goes, with its process or its worker, its leases are
    released. Releasing more often than acquiring raises ``RuntimeError``.
    """

    _prefix = "semaphore"

    def __init__(self, max_leases: int = 1, name: str | None = None, client: Client | None = None) -> None:
        if max_leases < 1:
            raise ValueError(f"max_leases must be at least 1, got {max_leases}")
        super().__init__(name, client)
        self.max_leases = max_leases
        self._leases: deque[str] = deque()
        self._registered = False

    async def _register(self, client: Client) -> None:
        if not self._registered:
            await client._core.request("semaphore-create", name=self.name, max_leases=self.max_leases)
            self._registered = True

    def acquire(self, timeout: float | None = None) -> Any:
        """Take a lease, waiting at most ``timeout`` seconds for one.

        Returns:
            True once taken, False if the timeout passed first.
        """
        client = self.client
        return client._sync(self._acquire, client, timeout)

    async def _acquire(self, client: Client, timeout: float | None) -> bool:
        await self._register(client)
        lease = uuid.uuid4().hex
        reply = await client._core.request(
            "semaphore-acquire", name=self.name, lease=lease, timeout=timeout
        )
        if reply["status"] != "OK":
            return False
        self._leases.append(lease)
        return True

    def release(self) -> Any:
        """Give back the lease this object took first.

        Raises:
            RuntimeError: when this object holds no lease ("Released too often").
        """
        if not self._leases:
            raise RuntimeError("Released too often")
        lease = self._leases.popleft()
        client = self.client
        return client._sync(self._release, client, lease)

    async def _release(self, client: Client, lease: str) -> None:
        reply = await client._core.request("semaphore-release", name=self.name, lease=lease)
        if reply["status"] != "OK":
            raise RuntimeError(
                f"Released too often: {type(self).__name__} {self.name!r} did not hold that lease any "
                f"more (its holder's client went away, which released it)"
            )

    def get_value(self) -> Any:
        """How many leases are taken now, by anyone."""
        return self._run(self.client._core.request, "semaphore-value", name=self.name)

    def close(self) -> Any:
        """Release the leases this object still holds."""
        client = self.client
        leases, self._leases = list(self._leases), deque()

        async def release_all() -> None:
            for lease in leases:
                await client._core.request("semaphore-release", name=self.name, lease=lease)

        return client._sync(release_all)

    def __reduce__(self) -> Any:
        return (type(self), (self.max_leases, self.name))


class Lock(Semaphore):
    """A cluster-wide lock (``dask.distributed.Lock``): a semaphore of one lease.

    Args:
        name: its name; the same name is the same lock everywhere.
        client: the client to use; default :func:`get_client`.

    Example:
        >>> with Lock("the-production-database"):
        ...     ...  # one holder at a time, cluster-wide

    A lock held by a task is released when the task's worker dies.
    """

    _prefix = "lock"

    def __init__(self, name: str | None = None, client: Client | None = None) -> None:
        super().__init__(1, name, client)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Any:  # type: ignore[override]
        """Take the lock; ``blocking=False``: only if it is free now.

        Returns:
            True once taken, False if ``timeout`` passed first (or it was taken).
        """
        if not blocking:
            if timeout is not None:
                raise ValueError("can't specify a timeout for a non-blocking call")
            timeout = 0
        return super().acquire(timeout=timeout)

    def locked(self) -> Any:
        """Whether anyone holds the lock now."""
        client = self.client
        return _then(client, self.get_value(), lambda value: value == 1)

    def __reduce__(self) -> Any:
        return (type(self), (self.name,))


# --------------------------------------------------------------------- Event


class Event(_Named):
    """A cluster-wide event flag (``dask.distributed.Event``).

    Args:
        name: its name; the same name is the same event everywhere.
        client: the client to use; default :func:`get_client`.
    """

    _prefix = "event"

    def set(self) -> Any:
        """Set the flag: every ``wait`` returns True."""
        msg: msgs.EventSetMsg = {"op": "event-set", "name": self.name, "stimulus_id": stimulus_id("event-set")}
        return self._send(msg)

    def clear(self) -> Any:
        """Clear the flag: ``wait`` waits again."""
        msg: msgs.EventClearMsg = {
            "op": "event-clear", "name": self.name, "stimulus_id": stimulus_id("event-clear")
        }
        return self._send(msg)

    def wait(self, timeout: float | None = None) -> Any:
        """Wait until the flag is set; True then, False if ``timeout`` passed first."""
        client = self.client
        reply = self._run(self.client._core.request, "event-wait", name=self.name, timeout=timeout)
        return _then(client, reply, lambda r: r["status"] == "OK")

    def is_set(self) -> Any:
        """Whether the flag is set."""
        return self._run(self.client._core.request, "event-is-set", name=self.name)


# ----------------------------------------------------------------- MultiLock


class MultiLock(_Held, _Named):
    """Several locks taken at once, or none (``dask.distributed.MultiLock``).

    Args:
        names: the names of the locks (a namespace of their own, apart from
            :class:`Lock`'s).
        client: the client to use; default :func:`get_client`.
    """

    _prefix = "multilock"

    def __init__(self, names: list[str] | tuple[str, ...] = (), client: Client | None = None) -> None:
        super().__init__(None, client)
        self.names = list(names)
        self._lease: str | None = None

    def acquire(self, blocking: bool = True, timeout: float | None = None, num_locks: int | None = None) -> Any:
        """Take ``num_locks`` of the locks (all by default), all at once.

        Returns:
            True once taken, False if ``timeout`` passed first.
        """
        if not blocking:
            if timeout is not None:
                raise ValueError("can't specify a timeout for a non-blocking call")
            timeout = 0
        client = self.client
        return client._sync(self._acquire, client, timeout, num_locks)

    async def _acquire(self, client: Client, timeout: float | None, num_locks: int | None) -> bool:
        lease = uuid.uuid4().hex
        reply = await client._core.request(
            "multilock-acquire", names=self.names, num_locks=num_locks, lease=lease, timeout=timeout
        )
        if reply["status"] != "OK":
            return False
        self._lease = lease
        return True

    def release(self) -> Any:
        """Release the locks taken.

        Raises:
            RuntimeError: when this object holds none ("Released too often").
        """
        if self._lease is None:
            raise RuntimeError("Released too often")
        lease, self._lease = self._lease, None
        client = self.client
        reply = self._run(self.client._core.request, "multilock-release", lease=lease)

        def check(r: msgs.CoordinationReply) -> None:
            if r["status"] != "OK":
                raise RuntimeError(f"Released too often: MultiLock {self.names} was not held any more")

        return _then(client, reply, check)

    def __reduce__(self) -> Any:
        return (type(self), (self.names,))


# ------------------------------------------------------------ fire_and_forget


def fire_and_forget(obj: Any) -> None:
    """Keep computing these futures, and the tasks they need, even once
    every client drops them (``dask.distributed.fire_and_forget``).

    Args:
        obj: a future, or lists, tuples, sets or dicts of futures.
    """
    found: list[Future] = []

    def collect(item: Any) -> Any:
        if isinstance(item, Future):
            found.append(item)
        return item

    replace(obj, collect)
    by_client: dict[int, tuple[Client, list[Key]]] = {}
    for future in found:
        client = future.client
        by_client.setdefault(id(client), (client, []))[1].append(future.key)
    for client, keys in by_client.values():
        msg: msgs.FireAndForgetMsg = {
            "op": "fire-and-forget", "keys": keys, "stimulus_id": stimulus_id("fire-and-forget")
        }
        client._call_in_loop(client._core.send, msg)
