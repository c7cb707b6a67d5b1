"""``Client``: dask.distributed's Client API, synchronous or asynchronous.

One code path: every operation is implemented once, asynchronously, in
:class:`ClientCore`. An asynchronous client (``asynchronous=True``) runs it in
the caller's event loop (trio or asyncio); a synchronous one runs it in a
trio loop on a thread of its own and blocks on a portal into it, which also
works where an asyncio loop already runs in the calling thread (Jupyter).
Methods that wait return an awaitable with an asynchronous client and the
value with a synchronous one, as in dask.

``Client`` is defined here with its life cycle, the sync bridge, submit and
map, dask collections, actors and datasets; two mixins give it the rest:
:class:`~trioclust.client.future_ops.FutureOperations` (gather, scatter,
retry, cancel) and :class:`~trioclust.client.cluster_admin.ClusterAdmin`
(run, who_has, replicate, rebalance, restart, plugins, upload_file, task
stream, logs, profile).
"""

from __future__ import annotations

import html
import inspect
import os
import uuid
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from trioclust import config
from trioclust.client import actors as _actors
from trioclust.client import collections as dask_collections
from trioclust.client.actors import actor_futures
from trioclust.client.cluster_admin import ClusterAdmin
from trioclust.client.core import ClientCore
from trioclust.client.future_ops import FutureOperations
from trioclust.client.futures import Future
from trioclust.client.graph_messages import GRAPH_CHUNK
from trioclust.client.keys import funcname, make_key, pack_futures, tokenize, unique_suffix
from trioclust.client.placement import check_fifo_timeout, task_options
from trioclust.loop_thread import HostedContext, LoopThread
from trioclust.protocol.actors import CreateActor
from trioclust.protocol.messages import Key
from trioclust.protocol.run_spec import dumps_task
from trioclust.sizes import format_bytes
from trioclust.transport.addresses import normalize_address

if TYPE_CHECKING:
    from trioclust.security import Security

_cluster_factory: Callable[..., Any] | None = None

#: Clients of this process, oldest first (see :meth:`Client.current`).
_clients: weakref.WeakValueDictionary[int, Client] = weakref.WeakValueDictionary()


def set_cluster_factory(factory: Callable[..., Any]) -> None:
    """Name what ``Client()`` starts when no scheduler address is configured.

    ``trioclust.deploy`` registers ``LocalCluster`` here when it is imported
    (``import trioclust`` does that), so the client layer needs no import of
    the layers above it.
    """
    global _cluster_factory
    _cluster_factory = factory


def _configured_address() -> str | None:
    address = os.environ.get("TRIOCLUST_SCHEDULER_ADDRESS") or config.get("scheduler-address", None)
    return str(address) if address else None


def _scheduler_address(address: Any) -> str:
    if address is not None and hasattr(address, "scheduler_address"):
        address = address.scheduler_address  # a cluster object
    if address is None:
        address = _configured_address()
    if address is None:
        raise ValueError(
            "Client() needs the scheduler's address, e.g. Client('tcp://127.0.0.1:8786'); "
            "or set TRIOCLUST_SCHEDULER_ADDRESS, or 'scheduler-address' in the config file."
        )
    if not isinstance(address, str):
        raise ValueError(
            f"Client expects a scheduler address string such as 'tcp://127.0.0.1:8786', "
            f"got {address!r}"
        )
    return normalize_address(address)


def _graph_options(
    workers: Any, allow_other_workers: bool, resources: Any, retries: int | None, actors: Any,
    fifo_timeout: Any,
) -> Any:
    """The placement options of every task of a ``compute``/``persist`` graph."""
    _unsupported(actors=actors)
    if isinstance(workers, dict) or (isinstance(resources, dict) and any(
        isinstance(v, dict) for v in resources.values()
    )):
        raise NotImplementedError(
            "trioclust takes workers= and resources= for the whole graph of a compute/persist; "
            "a dict of them per key or collection is not supported yet"
        )
    if fifo_timeout is not None:
        check_fifo_timeout(fifo_timeout)
    return task_options(workers, allow_other_workers, resources, retries)


def _unsupported(**options: Any) -> None:
    used = sorted(name for name, value in options.items() if value not in (None, False))
    if used:
        raise NotImplementedError(
            f"trioclust does not support {', '.join(used)} yet; leave {'it' if len(used) == 1 else 'them'} "
            f"out, or use dask.distributed for this computation."
        )


class Client(FutureOperations, ClusterAdmin):
    """Connect to a scheduler and compute on its cluster.

    Args:
        address: the scheduler, e.g. ``"tcp://127.0.0.1:8786"`` (a bare
            ``"host:port"`` means TCP), or a cluster object with a
            ``scheduler_address``. Without one, ``TRIOCLUST_SCHEDULER_ADDRESS``,
            then the config's ``scheduler-address`` are used, and failing
            both a ``LocalCluster`` is started.
        asynchronous: True inside ``async`` code (trio or asyncio): use
            ``async with Client(..., asynchronous=True) as client`` and await
            the methods that wait.
        timeout: seconds to keep trying to connect; default
            ``comm.timeouts.connect``.
        name: this client's name, shown in the scheduler's logs.
        security: the :class:`~trioclust.Security` to connect with (needed for
            ``tls://`` and ``wss://`` schedulers): it presents the client
            certificate and checks the scheduler's and workers' against the
            CA. ``Client(cluster)`` uses the cluster's by default. ``True``
            is only for a client that starts its own cluster: the cluster
            makes a temporary one (``LocalCluster(security=True)``).
        set_as_default: make this client dask's scheduler while it is open
            (``x.compute()``, ``dask.compute``, ``dask.persist`` run on its
            cluster; the newest such client wins), and dataframe shuffles
            task-based. See docs/collections.md.
        **cluster_kwargs: with no address configured anywhere, ``Client()``
            starts a ``LocalCluster(**cluster_kwargs)``, owns it, and closes
            it with itself (``client.cluster``).
    """

    def __init__(
        self,
        address: Any = None,
        *,
        asynchronous: bool = False,
        timeout: float | None = None,
        name: str | None = None,
        security: Security | bool | None = None,
        set_as_default: bool = True,
        **cluster_kwargs: Any,
    ) -> None:
        self.asynchronous = asynchronous
        self._set_as_default = set_as_default
        self.name = name or f"Client-{uuid.uuid4().hex[:8]}"
        #: the LocalCluster this client started (and closes with itself), if any
        self.cluster: Any = None
        if cluster_kwargs and (address is not None or _configured_address() is not None):
            raise TypeError(
                f"Client got unexpected keyword arguments {sorted(cluster_kwargs)}; they are "
                f"LocalCluster options, used only when Client() starts a cluster itself"
            )
        if address is None and _configured_address() is None:
            if _cluster_factory is None:
                _scheduler_address(None)  # raises the error that says what to do
            assert _cluster_factory is not None
            if security not in (None, False):
                cluster_kwargs["security"] = security
            self.cluster = address = _cluster_factory(asynchronous=asynchronous, **cluster_kwargs)
            security = None  # the cluster's, below
        elif security is True:
            raise TypeError(
                "Client(security=True) makes new certificates, which only a cluster this client "
                "starts itself would trust; pass the Security the cluster was started with"
            )
        #: the Security this client connects with (a cluster's own by default)
        self.security: Security | None = (
            security if security is not None and not isinstance(security, bool)
            else getattr(address, "security", None)
        )
        self._cluster_arg = address
        self._timeout = timeout if timeout is not None else config.get_float("comm.timeouts.connect")
        self._loop: LoopThread | None = None
        self._hosted: HostedContext | None = None
        self._core: ClientCore
        if asynchronous and self.cluster is not None:
            self.scheduler_address = ""  # known once the cluster has started
        else:
            self._make_core(address)
        if not asynchronous:
            try:
                self._start_sync()
            except BaseException:
                if self.cluster is not None:
                    self.cluster.close()
                raise
            self._became_running()

    def _make_core(self, address: Any) -> None:
        self.scheduler_address = _scheduler_address(address)
        if self.security is None:
            self.security = getattr(address, "security", None)
        self._core = ClientCore(
            self, self.scheduler_address, name=self.name, timeout=self._timeout,
            security=self.security,
        )

    # --------------------------------------------------------- life cycle
    def _start_sync(self) -> None:
        shared = getattr(self._cluster_arg, "_loop", None)
        if not (shared is not None and self.scheduler_address.startswith("inproc://")):
            shared = None  # a loop of our own; the cluster's own when that saves a thread hop
        self._hosted = HostedContext(self, self._core, name=f"trioclust-{self.name}", loop=shared)
        self._loop = self._hosted.loop
        _clients[id(self)] = self

    async def _start_async(self) -> Self:
        if self.cluster is not None and not self.scheduler_address:
            await self.cluster.__aenter__()
            self._make_core(self.cluster)
        try:
            await self._core.__aenter__()
        except BaseException:
            if self.cluster is not None:
                await self.cluster.close()
            raise
        self._became_running()
        _clients[id(self)] = self
        return self

    @classmethod
    def current(cls) -> Client:
        """The newest client of this process that is still running
        (``dask.distributed.Client.current``).

        Raises:
            ValueError: when there is none.
        """
        for client in reversed(list(_clients.values())):
            if client.status == "running":
                return client
        raise ValueError(
            "No clients found. Start a client and point it to the scheduler address: "
            "client = Client('tcp://127.0.0.1:8786')"
        )

    def __await__(self) -> Any:
        if not self.asynchronous:
            raise TypeError("Only an asynchronous Client (asynchronous=True) can be awaited")
        return self._start_async().__await__()

    async def __aenter__(self) -> Self:
        if not self.asynchronous:
            raise TypeError(
                "Use 'with Client(...)' for a synchronous client, or pass asynchronous=True"
            )
        return await self._start_async()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close_async()

    async def _close_async(self) -> None:
        dask_collections.unset_default_client(self)
        await self._core.close()
        if self.cluster is not None:
            await self.cluster.close()

    def __enter__(self) -> Self:
        if self.asynchronous:
            raise TypeError("Use 'async with' for an asynchronous client")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> Any:
        """Release every future, disconnect, and stop the client's thread (if it has one).

        Awaitable with an asynchronous client.
        """
        if self.asynchronous:
            return self._close_async()
        dask_collections.unset_default_client(self)
        if self._hosted is not None:
            hosted, self._hosted = self._hosted, None
            try:
                hosted.close()
            finally:
                self._loop = None
        if self.cluster is not None:
            self.cluster.close()
        return None

    @property
    def status(self) -> str:
        """``"running"``, ``"closing"``, ``"closed"``, or ``"disconnected"``."""
        return self._core.status

    @property
    def id(self) -> str:
        """The name the scheduler knows this client by."""
        return self._core.id

    # -------------------------------------------------------- sync bridge
    def _sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an async method: an awaitable when asynchronous, else its result."""
        if self.asynchronous:
            return fn(*args, **kwargs)
        if self._loop is None:
            raise RuntimeError(f"This client is closed; create a new Client({self.scheduler_address!r})")
        return self._loop.portal.call(partial(self._after_inbox_async, fn, *args, **kwargs))

    async def _after_inbox_async(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._core.inbox.drain()  # what this thread queued before goes first
        return await fn(*args, **kwargs)

    def _after_inbox(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._core.inbox.drain()
        return fn(*args)

    def _call_in_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a plain function in the client's event loop thread and return its result."""
        if self.asynchronous:
            return fn(*args)
        if self._loop is None:
            raise RuntimeError(f"This client is closed; create a new Client({self.scheduler_address!r})")
        return self._loop.portal.call(self._after_inbox, fn, *args)

    # ------------------------------------------------------------- submit
    def submit(
        self,
        func: Callable[..., Any],
        *args: Any,
        key: Key | None = None,
        pure: bool = True,
        priority: int = 0,
        workers: Any = None,
        resources: dict[str, float] | None = None,
        retries: int | None = None,
        allow_other_workers: bool = False,
        actor: bool = False,
        fifo_timeout: Any = "60s",
        **kwargs: Any,
    ) -> Future:
        """Run ``func(*args, **kwargs)`` on the cluster; returns a :class:`Future`.

        Args:
            func: the function (or coroutine function) to call.
            *args: its arguments; futures among them (also inside lists,
                tuples and dicts) are replaced by their results.
            key: the task's key; default ``name-hash`` of function and
                arguments (``pure=True``) or ``name-random`` (``pure=False``).
            pure: whether the same call always gives the same result, so that
                submitting it twice computes it once.
            priority: higher runs first among waiting tasks.
            workers: where it may run: a worker's address, name or host, or
                a list of them (docs/scheduling.md).
            resources: what one run needs of the workers' resources, e.g.
                ``{"GPU": 1}``: it runs only on workers started with them,
                and only while they are free there.
            retries: how many times to rerun it if it raises.
            allow_other_workers: make ``workers`` a preference: any worker
                may run it when none of those is there.
            actor: ``func`` is a class: make one instance on a worker and
                keep it there; the future's result is an :class:`Actor`.
            fifo_timeout: Dask's window within which submissions may share a
                priority; trioclust runs equal priorities in submission
                order whatever it is (checked, see docs/scheduling.md).
            **kwargs: keyword arguments for ``func``.
        """
        options = task_options(workers, allow_other_workers, resources, retries)
        check_fifo_timeout(fifo_timeout)
        if not callable(func):
            raise TypeError(f"First argument to submit must be callable, got {func!r}")
        if actor:
            return self._submit_actor(func, args, kwargs, key, pure, priority)
        deps: set[Key] = set()
        # the original args stay referenced until the graph is queued: a future
        # that lives only in them must not be released before its dependent
        # (``submit(sum, client.map(...))``) is on its way
        packed_args = pack_futures(args, Future, deps)
        packed_kwargs = pack_futures(kwargs, Future, deps)
        if key is None:
            key = make_key(func, packed_args, packed_kwargs, pure)
        task: tuple[Any, ...] = (
            key, dumps_task(func, packed_args, packed_kwargs), sorted(deps, key=str),
            self._core.next_priority(priority),
        )
        if options:
            task += (options,)
        future = self._core.submit_tasks([task], [key])[0]
        del args, kwargs
        return future

    def map(
        self,
        func: Callable[..., Any],
        *iterables: Iterable[Any],
        key: str | list[Key] | None = None,
        pure: bool = True,
        priority: int = 0,
        workers: Any = None,
        resources: dict[str, float] | None = None,
        retries: int | None = None,
        allow_other_workers: bool = False,
        batch_size: int | None = None,
        fifo_timeout: Any = "60s",
        actor: bool = False,
        actors: bool = False,
        **kwargs: Any,
    ) -> list[Future]:
        """``submit(func, *items)`` for each tuple of items of the iterables.

        The tasks leave in update-graph messages of up to 1,000 tasks, each as
        soon as it is built: the cluster starts on the first while the rest
        are still being pickled.

        Args:
            func: the function to call.
            *iterables: argument sequences, zipped like the builtin ``map``.
            key: a list of keys, one per task, or a prefix for generated keys.
            pure, priority: as for :meth:`submit`.
            workers, resources, retries, allow_other_workers, fifo_timeout:
                as for :meth:`submit`, for every task.
            batch_size: accepted for dask compatibility; the tasks go in
                chunks of 1,000 whatever it says.
            actor, actors: ``func`` is a class: one actor per item (see
                :meth:`submit`).
            **kwargs: keyword arguments passed to every call.
        """
        options = task_options(workers, allow_other_workers, resources, retries)
        check_fifo_timeout(fifo_timeout)
        if not callable(func):
            raise TypeError(f"First argument to map must be callable, got {func!r}")
        if actor or actors:
            return self._map_actors(func, iterables, key, pure, priority, kwargs)
        items = list(zip(*iterables, strict=False))
        if isinstance(key, list) and len(key) != len(items):
            raise ValueError(f"map got {len(key)} keys for {len(items)} tasks")
        kw_deps: set[Key] = set()
        packed_kwargs = pack_futures(kwargs, Future, kw_deps)
        prefix = key if isinstance(key, str) else funcname(func)
        base = tokenize(func, packed_kwargs) if pure else ""
        futures: list[Future] = []
        tasks: list[tuple[Any, ...]] = []
        keys: list[Key] = []
        for i, item in enumerate(items):
            deps = set(kw_deps)
            args = pack_futures(item, Future, deps)
            if isinstance(key, list):
                k = key[i]
            elif pure:
                k = f"{prefix}-{tokenize(base, args)[:32]}"
            else:
                k = f"{prefix}-{unique_suffix()}"
            keys.append(k)
            task: tuple[Any, ...] = (
                k, dumps_task(func, args, packed_kwargs), sorted(deps, key=str), self._core.next_priority(priority),
            )
            tasks.append((*task, options) if options else task)
            if len(tasks) == GRAPH_CHUNK:
                futures += self._core.submit_tasks(tasks, keys)
                tasks, keys = [], []
        if tasks or not futures:
            futures += self._core.submit_tasks(tasks, keys)
        return futures

    # ---------------------------------------------------- dask collections
    # (the work is in client/collections.py)
    def _became_running(self) -> None:
        if self._set_as_default:
            dask_collections.set_default_client(self)

    def compute(
        self,
        collections: Any,
        sync: bool = False,
        optimize_graph: bool = True,
        priority: int = 0,
        workers: Any = None,
        resources: Any = None,
        retries: int | None = None,
        fifo_timeout: Any = None,
        actors: Any = None,
        traverse: bool = True,
        allow_other_workers: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Compute dask collections on the cluster; a future per collection.

        Args:
            collections: a dask collection (array, dataframe, bag, delayed),
                or a list or tuple of them (other items pass through).
            sync: return the results instead of futures (awaitable with an
                asynchronous client).
            optimize_graph: run dask's optimizations first.
            priority: higher runs first among waiting tasks.
            workers, resources, retries, allow_other_workers: as for
                :meth:`submit`, for every task of the graph (a dict of them
                per key or collection, which Dask also takes, is not
                supported yet and raises ``NotImplementedError``).
            actors: not supported yet; passing it raises ``NotImplementedError``.
            fifo_timeout: checked, as for :meth:`submit`.
            traverse, **kwargs: accepted for dask compatibility.

        Returns:
            A :class:`Future` for one collection, else a list in the order given.
        """
        options = _graph_options(workers, allow_other_workers, resources, retries, actors, fifo_timeout)
        return dask_collections.compute(
            self, collections, sync=sync, optimize_graph=optimize_graph, priority=priority,
            options=options,
        )

    def persist(
        self,
        collections: Any,
        optimize_graph: bool = True,
        priority: int = 0,
        workers: Any = None,
        resources: Any = None,
        retries: int | None = None,
        fifo_timeout: Any = None,
        actors: Any = None,
        allow_other_workers: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Start computing dask collections; the same collections, backed by futures.

        Returns at once. ``wait(x)`` waits for a persisted collection, and
        :func:`futures_of` lists its futures; computing on it reuses them.

        Args:
            collections: a dask collection or a list of them.
            optimize_graph, priority: as for :meth:`compute`.
            workers, resources, retries, allow_other_workers, actors,
                fifo_timeout: as for :meth:`compute`.
            **kwargs: accepted for dask compatibility.
        """
        options = _graph_options(workers, allow_other_workers, resources, retries, actors, fifo_timeout)
        return dask_collections.persist(
            self, collections, optimize_graph=optimize_graph, priority=priority, options=options
        )

    def get(self, dsk: Any, keys: Any, sync: bool = True, priority: int = 0, **kwargs: Any) -> Any:
        """Run a dask graph; the results of ``keys``, nested as ``keys`` is.

        The scheduler function dask calls (``dask.compute`` with this client
        as default, or ``dask.config.set(scheduler=client.get)``).

        Args:
            dsk: a dict of keys to tasks (``dask._task_spec`` nodes or legacy
                tuples), or an expression or collection (``__dask_graph__``).
            keys: a key, or (nested) lists of keys.
            sync: return the results (awaitable with an asynchronous client);
                False returns futures.
            priority: higher runs first among waiting tasks.
            **kwargs: accepted for dask compatibility.

        Raises:
            ValueError: a task depends on a key that exists nowhere.
            RuntimeError: the graph has a cycle.
        """
        return dask_collections.get(self, dsk, keys, sync=sync, priority=priority)

    # -------------------------------------------------------------- actors
    def _submit_actor(
        self, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any], key: Key | None, pure: bool,
        priority: int,
    ) -> Future:
        if not isinstance(cls, type):
            raise TypeError(f"submit(..., actor=True) needs a class, got {cls!r}")
        # each call makes a new instance: an actor is never shared by key
        future = self.submit(
            CreateActor(cls), *args, key=key or f"{funcname(cls)}-{unique_suffix()}", pure=False,
            priority=priority, **kwargs,
        )
        return actor_futures([future], self._core)[0]

    def _map_actors(
        self, cls: Any, iterables: tuple[Iterable[Any], ...], key: Any, pure: bool, priority: int,
        kwargs: dict[str, Any],
    ) -> list[Future]:
        if not isinstance(cls, type):
            raise TypeError(f"map(..., actor=True) needs a class, got {cls!r}")
        futures = self.map(
            CreateActor(cls), *iterables, key=key if key is not None else funcname(cls), pure=False,
            priority=priority, **kwargs,
        )
        return actor_futures(futures, self._core)

    # --------------------------------------------------- client operations
    def sync(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``func(*args, **kwargs)``, a coroutine function, on this client's event loop.

        A synchronous client waits for it and returns its result (as Dask's
        notebooks do with ``client.sync``); an asynchronous one returns the
        awaitable. ``func`` may use anyio (it runs under trio in a
        synchronous client's loop).
        """
        if self.asynchronous:
            return _maybe_await(func, args, kwargs)
        return self._sync(_maybe_await, func, args, kwargs)

    # ----------------------------------------------------------- datasets
    def publish_dataset(self, *args: Any, name: str | None = None, override: bool = False, **kwargs: Any) -> Any:
        """Publish futures (or any values) under names, for every client of
        the scheduler (``client.publish_dataset(x=future)``, or
        ``publish_dataset(future, name="x")``); they stay until unpublished.

        Raises:
            KeyError: when a name is taken, unless ``override=True``.
        """
        from trioclust.client import datasets

        if args:
            if name is None:
                raise ValueError("publish_dataset(value, name=...) needs a name for the value")
            if len(args) != 1:
                raise ValueError("publish_dataset takes one value with name=...; use keywords for more")
            kwargs[name] = args[0]
        return self._sync(datasets.publish, self, kwargs, override)

    def unpublish_dataset(self, name: str) -> Any:
        """Remove the published dataset ``name`` (its futures may then be released)."""
        from trioclust.client import datasets

        return self._sync(datasets.unpublish, self, name)

    def get_dataset(self, name: str, default: Any = ...) -> Any:
        """The published dataset ``name``; its futures become this client's.

        Raises:
            KeyError: when there is none and no ``default`` was given.
        """
        from trioclust.client import datasets

        return self._sync(datasets.get, self, name, datasets._MISSING if default is ... else default)

    def list_datasets(self) -> Any:
        """The names of the published datasets, sorted."""
        return self._sync(self._core.request, "list-datasets")

    @property
    def datasets(self) -> Any:
        """The published datasets as a mapping (``client.datasets["x"] = future``)."""
        from trioclust.client.datasets import Datasets

        return Datasets(self)

    # --------------------------------------------------------------- repr
    def __repr__(self) -> str:
        if self.status != "running" or self.asynchronous:
            return f"<Client: {self.scheduler_address!r} status={self.status}>"
        try:
            info = self.scheduler_info()
        except Exception:
            return f"<Client: {self.scheduler_address!r} status={self.status}>"
        workers = info["workers"].values()
        threads = sum(w["nthreads"] for w in workers)
        memory = sum(w["memory_limit"] for w in workers)
        return (
            f"<Client: {self.scheduler_address!r} workers={len(info['workers'])} "
            f"threads={threads}, memory={format_bytes(memory)}>"
        )

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>"


async def _maybe_await(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


_actors.current_client = Client.current
