"""``Client``: dask.distributed's Client API, synchronous or asynchronous.

One code path: every operation is implemented once, asynchronously, in
:class:`ClientCore`. An asynchronous client (``asynchronous=True``) runs it in
the caller's event loop (trio or asyncio); a synchronous one runs it in a
trio loop on a thread of its own and blocks on a portal into it, which also
works where an asyncio loop already runs in the calling thread (Jupyter).
Methods that wait return an awaitable with an asynchronous client and the
value with a synchronous one, as in dask.
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
from trioclust.client.actors import actor_futures, as_actor
from trioclust.client.core import GRAPH_CHUNK, ClientCore, deserialized, stimulus_id
from trioclust.client.diagnostics import TaskStreamRecording, as_log
from trioclust.client.futures import Future, FutureState
from trioclust.client.keys import funcname, make_key, pack_futures, tokenize, unique_suffix
from trioclust.client.placement import check_fifo_timeout, task_options
from trioclust.client.plugins import NannyPlugin, SchedulerPlugin, WorkerPlugin
from trioclust.loop_thread import HostedContext, LoopThread
from trioclust.protocol import serialize
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


class Client:
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

    def who_has(self, futures: Any = None) -> Any:
        """The workers holding each key: ``{key: [address, ...]}``.

        Args:
            futures: futures (or a structure of them, or keys); None: every
                key the scheduler holds.
        """
        return self._sync(self._core.request, "get-who-has", keys=_keys_of(futures))

    def has_what(self, workers: list[str] | str | None = None) -> Any:
        """The keys each worker holds: ``{address: [key, ...]}`` (all workers when None)."""
        return self._sync(self._core.request, "has-what", workers=_worker_list(workers))

    def nthreads(self, workers: list[str] | str | None = None) -> Any:
        """The threads of each worker: ``{address: n}`` (all workers when None)."""
        return self._sync(self._core.request, "nthreads", workers=_worker_list(workers))

    ncores = nthreads

    def replicate(
        self, futures: Any, n: int | None = None, workers: list[str] | None = None,
        branching_factor: int = 2,
    ) -> Any:
        """Copy the futures' data onto ``n`` workers (all when None), among
        ``workers`` (addresses or names) when given; ``n`` below the present
        number of copies drops some (never the last). Waits for the futures
        first, and returns once the copies are made. ``branching_factor`` is
        accepted for Dask's sake: each copy is fetched from a present holder.
        """
        found: list[Future] = []
        _collect_futures(futures if not isinstance(futures, Future) else [futures], found)
        return self._sync(self._replicate, found, n, workers)

    async def _replicate(self, futures: list[Future], n: int | None, workers: list[str] | None) -> None:
        for future in futures:  # computed first, as in Dask
            await future._state.wait()
        await self._core.request(
            "replicate", keys=[f.key for f in futures], n=n, workers=_worker_list(workers)
        )

    def rebalance(self, futures: Any = None, workers: list[str] | None = None) -> Any:
        """Move data between workers to even out the bytes they hold: of the
        futures' keys (all keys when None), over ``workers`` (all when None).
        Returns once the moves are done."""
        found: list[Future] | None = None
        if futures is not None:
            found = []
            _collect_futures(futures if not isinstance(futures, Future) else [futures], found)
        return self._sync(self._rebalance, found, workers)

    async def _rebalance(self, futures: list[Future] | None, workers: list[str] | None) -> None:
        for future in futures or ():
            await future._state.wait()
        await self._core.request(
            "rebalance", keys=None if futures is None else [f.key for f in futures],
            workers=_worker_list(workers),
        )

    def restart(self, timeout: float | None = None, wait_for_workers: bool = True) -> Any:
        """Restart every worker and cancel every future (of every client).

        Workers under a nanny come back as fresh processes; a worker without a
        nanny is closed and does not come back (as in Dask: then this times
        out unless ``wait_for_workers=False``).

        Args:
            timeout: seconds to wait (default four times ``comm.timeouts.connect``);
                then ``TimeoutError``.
            wait_for_workers: wait until as many workers as before are back
                (True), or only until the old ones are gone.
        """
        return self._sync(self._core.request, "restart", timeout=timeout, wait_for_workers=wait_for_workers)

    def register_plugin(
        self, plugin: Any, name: str | None = None, idempotent: bool | None = None
    ) -> Any:
        """Install a :class:`WorkerPlugin` on every worker (also those that join
        later), a :class:`NannyPlugin` in every worker's nanny (likewise), or
        a :class:`SchedulerPlugin` on the scheduler.

        Args:
            plugin: the plugin object; it is pickled and sent.
            name: its name (default its ``name`` attribute, else the class
                name and a random suffix); a plugin of the same name is replaced.
            idempotent: keep an existing plugin of that name instead (default:
                the plugin's ``idempotent`` attribute, else False).

        A worker plugin's ``setup`` errors are returned as ``{worker: text}``
        (``"OK"`` for the others); a scheduler plugin's ``start`` error, and a
        nanny plugin's ``setup`` error (as ``RuntimeError``), are raised.
        """
        if name is None:
            name = getattr(plugin, "name", None) or f"{funcname(type(plugin))}-{uuid.uuid4()}"
        if idempotent is None:
            idempotent = bool(getattr(plugin, "idempotent", False))
        if isinstance(plugin, SchedulerPlugin):
            return self._sync(
                self._core.request, "register-scheduler-plugin", plugin=serialize(plugin), name=name,
                idempotent=idempotent,
            )
        if isinstance(plugin, NannyPlugin):
            return self._sync(self._register_nanny_plugin, plugin, name, idempotent)
        if not isinstance(plugin, WorkerPlugin) and not hasattr(plugin, "setup"):
            raise TypeError(
                f"register_plugin takes a WorkerPlugin, a SchedulerPlugin or a NannyPlugin, "
                f"got {plugin!r}"
            )
        return self._sync(
            self._core.request, "register-worker-plugin", plugin=serialize(plugin), name=name,
            idempotent=idempotent,
        )

    async def _register_nanny_plugin(self, plugin: Any, name: str, idempotent: bool) -> dict[str, str]:
        replies: dict[str, str] = await self._core.request(
            "register-nanny-plugin", plugin=serialize(plugin), name=name, idempotent=idempotent
        )
        for worker, status in replies.items():
            if status != "OK":  # as in Dask: a nanny's setup error is raised
                raise RuntimeError(f"NannyPlugin {name!r} failed in the nanny of {worker}: {status}")
        return replies

    def register_worker_plugin(self, plugin: Any, name: str | None = None, nanny: bool | None = None) -> Any:
        """Dask's older name for :meth:`register_plugin` with a worker plugin
        (or, with ``nanny=True`` or a :class:`NannyPlugin`, a nanny plugin)."""
        if nanny and not isinstance(plugin, NannyPlugin):
            raise TypeError(f"register_worker_plugin(nanny=True) takes a NannyPlugin, got {plugin!r}")
        return self.register_plugin(plugin, name=name)

    def unregister_worker_plugin(self, name: str, nanny: bool | None = None) -> Any:
        """Tear down and forget the worker plugin ``name`` (with ``nanny=True``,
        the nanny plugin) on every worker; workers that join later no longer
        get it.

        Args:
            name: the name it was registered under.
            nanny: whether it is a :class:`NannyPlugin`.

        Returns:
            ``{worker: "OK" or the teardown error's text}``.

        Raises:
            ValueError: no plugin of that kind has that name.
        """
        return self._sync(
            self._core.request, "unregister-worker-plugin", name=name, nanny=bool(nanny)
        )

    def register_scheduler_plugin(
        self, plugin: Any, name: str | None = None, idempotent: bool | None = None
    ) -> Any:
        """Dask's older name for :meth:`register_plugin` with a scheduler plugin."""
        return self.register_plugin(plugin, name=name, idempotent=idempotent)

    def upload_file(self, filename: str | os.PathLike[str], load: bool = True) -> Any:
        """Send a ``.py``, ``.zip`` or ``.egg`` file to every worker, now and joining later.

        Each worker puts it on its import path and, with ``load``, imports it
        (reloading a module imported before), so tasks can import it. An
        import that fails on a worker raises its exception here.
        """
        path = os.fspath(filename)
        with open(path, "rb") as f:
            data = f.read()
        return self._sync(
            self._core.request, "upload-file", filename=os.path.basename(path), data=data, load=load
        )

    # ------------------------------------------------------------- results
    def gather(self, futures: Any, errors: str = "raise", asynchronous: bool | None = None) -> Any:
        """The results of futures, in the same structure (lists, tuples, dicts, sets).

        Args:
            futures: a future, or a (nested) list, tuple, dict or set of them.
            errors: ``"raise"`` re-raises the first task error; ``"skip"``
                leaves erred futures out of the result.
            asynchronous: True returns an awaitable even from a synchronous
                client, for a coroutine run on its loop by :meth:`sync`
                (Dask's "Asynchronous Operation" page).
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        if asynchronous:
            return self._gather(futures, errors)
        return self._sync(self._gather, futures, errors)

    async def _gather(self, futures: Any, errors: str) -> Any:
        states: list[FutureState] = []
        _collect_states(futures, states)
        values = await self._core.gather_states(states, errors)
        return _replace_futures(futures, {k: as_actor(v, self._core) for k, v in values.items()})

    def scatter(
        self, data: Any, workers: list[str] | str | None = None, broadcast: bool = False,
        hash: bool = True, asynchronous: bool | None = None,
    ) -> Any:
        """Send local data to workers; returns futures in the same shape as ``data``.

        Args:
            data: one object; a list, tuple or any other iterable of objects
                (a list of futures comes back; a tuple for a tuple); or a
                dict (its keys become the futures' keys). A string, bytes or
                an array is one object.
            workers: addresses to send to (default: all, round-robin).
            broadcast: send every item to every chosen worker.
            hash: key by content (the same data scatters to the same key);
                False: a new random key each time.
            asynchronous: True returns an awaitable even from a synchronous
                client (as for :meth:`gather`).
        """
        if isinstance(workers, str):
            workers = [workers]
        if asynchronous:
            return self._scatter(data, workers, broadcast, hash)
        return self._sync(self._scatter, data, workers, broadcast, hash)

    async def _scatter(self, data: Any, workers: list[str] | None, broadcast: bool, hash: bool) -> Any:
        many = _is_collection(data)
        if many and not isinstance(data, dict | list | tuple):
            data = list(data)  # a set, a generator, any iterator: read it once
        if isinstance(data, dict):
            keys: list[Key] = [str(k) for k in data]
            items = list(data.values())
        else:
            items = list(data) if many else [data]
            keys = [
                f"{type(v).__name__}-{tokenize(v)[:32] if hash else unique_suffix()}" for v in items
            ]
        named = dict(zip(keys, items, strict=True))
        futures = await self._core.scatter(named, workers, broadcast)
        by_key = {f.key: f for f in futures}
        if isinstance(data, dict):
            return by_key
        if many:
            out = [by_key[k] for k in keys]
            return tuple(out) if isinstance(data, tuple) else out
        return futures[0]

    # ------------------------------------------------- placement: retries
    def retry(self, futures: Any, asynchronous: bool | None = None) -> Any:
        """Rerun erred futures, and the erred tasks they depend on.

        Their status goes back to ``"pending"`` and they compute again (with
        the ``retries`` they had left). Awaitable with an asynchronous client,
        or with ``asynchronous=True`` (as for :meth:`gather`).
        """
        found: list[Future] = []
        _collect_futures(futures, found)
        if asynchronous:
            return self._retry(found)
        return self._sync(self._retry, found)

    async def _retry(self, futures: list[Future]) -> None:
        erred = [f for f in futures if f._state.status == "error"]
        for future in erred:
            future._state.lose()  # pending again; the scheduler's answer follows
        if erred:
            await self._core.request(
                "retry", keys=[f.key for f in erred], stimulus_id=stimulus_id("retry")
            )

    def cancel(self, futures: Any, asynchronous: bool | None = None) -> Any:
        """Stop computing these futures and release their results on the cluster.

        Their ``result()`` then raises :class:`CancelledError`. Awaitable with an
        asynchronous client, or with ``asynchronous=True`` (as for :meth:`gather`).
        """
        found: list[Future] = []
        _collect_futures(futures, found)
        if asynchronous and not self.asynchronous:
            return self._cancel_in_loop(found)
        if self.asynchronous:
            self._core.cancel(found)
            return _done()
        self._call_in_loop(self._core.cancel, found)
        return None

    async def _cancel_in_loop(self, found: list[Future]) -> None:
        self._core.cancel(found)

    # --------------------------------------------------------------- admin
    def run(self, function: Callable[..., Any], *args: Any, workers: list[str] | None = None, **kwargs: Any) -> Any:
        """Call ``function(*args, **kwargs)`` on every worker (or ``workers``).

        Returns ``{worker address: result}``. A function with a ``dask_worker``
        parameter receives the Worker object there. Runs in the worker's event
        loop, outside the task threads.
        """
        return self._sync(self._run, function, args, kwargs, workers)

    async def _run(self, function: Any, args: Any, kwargs: Any, workers: Any) -> dict[str, Any]:
        from trioclust.client.remote_exceptions import rebuild_exception

        reply = await self._core.request(
            "broadcast", function=serialize(function), args=serialize(tuple(args)),
            kwargs=serialize(dict(kwargs)), workers=workers,
        )
        for address, error in sorted(reply["errors"].items()):
            exc = rebuild_exception(error.get("exception"), None, error.get("text") or "")
            if error.get("exception") is None:
                raise RuntimeError(f"client.run failed on {address}: {error.get('text')}")
            raise exc
        return {address: deserialized(value) for address, value in reply["results"].items()}

    def run_on_scheduler(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``function(*args, **kwargs)`` in the scheduler's process.

        A function with a ``dask_scheduler`` parameter receives the Scheduler.
        """
        return self._sync(self._run_on_scheduler, function, args, kwargs)

    async def _run_on_scheduler(self, function: Any, args: Any, kwargs: Any) -> Any:
        result = await self._core.request(
            "run-on-scheduler", function=serialize(function), args=serialize(tuple(args)),
            kwargs=serialize(dict(kwargs)),
        )
        return deserialized(result)

    def scheduler_info(self) -> Any:
        """The scheduler's address, id, workers (threads, memory, tasks) and task counts."""
        return self._sync(self._core.request, "scheduler-info")

    def retire_workers(self, workers: list[str] | None = None, n: int | None = None) -> Any:
        """Close workers gracefully, their data moved to the others first.

        Args:
            workers: addresses of the workers to retire; or
            n: how many to retire (those holding the least data go first).

        Returns the retired addresses. A nanny does not restart a retired worker.
        """
        return self._sync(self._core.request, "retire-workers", workers=workers, n=n)

    def wait_for_workers(self, n_workers: int = 1, timeout: float | None = None) -> Any:
        """Wait until the cluster has at least ``n_workers`` workers."""
        return self._sync(self._wait_for_workers, n_workers, timeout)

    async def _wait_for_workers(self, n_workers: int, timeout: float | None) -> None:
        import anyio

        try:
            with anyio.fail_after(timeout):
                await self._core.request("wait-for-workers", n=n_workers)
        except TimeoutError:
            raise TimeoutError(
                f"The scheduler at {self.scheduler_address} did not get {n_workers} workers "
                f"within {timeout} s"
            ) from None

    # --------------------------------------------------------- diagnostics
    def get_task_stream(
        self, start: float | str | None = None, stop: float | str | None = None,
        count: int | None = None,
    ) -> TaskStreamRecording:
        """Finished task runs, with the times the workers measured.

        ``with client.get_task_stream() as ts:`` records the runs that finish
        inside the block into ``ts.data``; used without ``with``, ``.data``
        (or iterating) fetches the runs that stopped between ``start`` and
        ``stop``; ``await`` it with an asynchronous client.

        Args:
            start: a timestamp, or how long ago as ``"10s"``, ``"5m"``; None:
                the oldest run the scheduler keeps (``dashboard.task-stream-length``).
            stop: likewise; None: now.
            count: at most this many runs, the newest.

        Returns:
            A :class:`~trioclust.client.diagnostics.TaskStreamRecording`; its
            ``data`` is a list of dicts with Dask's fields: ``key``,
            ``worker``, ``thread``, ``startstops`` (``action``, ``start``,
            ``stop``), ``status``, ``nbytes``.
        """
        return TaskStreamRecording(self, start, stop, count)

    def get_scheduler_logs(self, n: int | None = None) -> Any:
        """The scheduler's recent log lines as ``(level, line)``, oldest first.

        Args:
            n: at most this many, the newest.
        """
        return self._sync(self._get_logs, n, None, True)

    def get_worker_logs(self, n: int | None = None, workers: list[str] | None = None) -> Any:
        """Each worker's recent log lines: ``{address: [(level, line), ...]}``.

        Args:
            n: at most this many per worker, the newest.
            workers: only these workers' (all by default).
        """
        return self._sync(self._get_logs, n, workers, False)

    def profile(
        self, duration: float = 1.0, *, workers: list[str] | None = None, merge_workers: bool = True,
        interval: float = 0.01,
    ) -> Any:
        """Sample the stacks of the tasks running on the workers, as Dask's profiler does.

        Unlike Dask, nothing is sampled unless asked: this samples the next
        ``duration`` seconds (every ``interval``) and returns then.

        Args:
            duration: seconds to sample for.
            workers: only these workers (all by default).
            merge_workers: one tree for all workers (True) or ``{address: tree}``.
            interval: seconds between samples.

        Returns:
            A tree of counts in Dask's shape: ``{"identifier", "description",
            "count", "children": {identifier: subtree}}``, rooted at the
            outermost frames of the tasks' code.
        """
        return self._sync(
            self._core.request, "profile", duration=duration, interval=interval, workers=workers,
            merge_workers=merge_workers,
        )

    async def _get_logs(self, n: int | None, workers: list[str] | None, scheduler: bool) -> Any:
        reply = await self._core.request("get-logs", n=n, workers=workers, scheduler=scheduler)
        if scheduler:
            return as_log(reply)
        return {address: as_log(rows) for address, rows in reply.items()}

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


def _is_collection(data: Any) -> bool:
    """Whether scatter sends ``data``'s items one by one (any iterable but a
    string, bytes or an array, which go as one object)."""
    if isinstance(data, str | bytes | bytearray | memoryview) or hasattr(data, "__array__"):
        return False
    return isinstance(data, dict) or hasattr(data, "__iter__")


async def _done() -> None:
    return None


async def _maybe_await(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _keys_of(futures: Any) -> list[Key] | None:
    if futures is None:
        return None
    if isinstance(futures, Future | str):
        futures = [futures]
    found: list[Future] = []
    _collect_futures(futures, found)
    keys = [f.key for f in found]
    if isinstance(futures, list | tuple | set):
        keys += [k for k in futures if isinstance(k, str)]
    return keys


def _worker_list(workers: list[str] | str | None) -> list[str] | None:
    if isinstance(workers, str):
        return [workers]
    return None if workers is None else list(workers)


def _collect_states(obj: Any, out: list[FutureState]) -> None:
    if isinstance(obj, Future):
        out.append(obj._state)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            _collect_states(item, out)
    elif isinstance(obj, dict):
        for item in obj.values():
            _collect_states(item, out)


def _collect_futures(obj: Any, out: list[Future]) -> None:
    if isinstance(obj, Future):
        out.append(obj)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            _collect_futures(item, out)
    elif isinstance(obj, dict):
        for item in obj.values():
            _collect_futures(item, out)


def _replace_futures(obj: Any, values: dict[Key, Any]) -> Any:
    if isinstance(obj, Future):
        return values[obj.key]
    if isinstance(obj, list | tuple | set | frozenset):
        return type(obj)(
            _replace_futures(item, values)
            for item in obj
            if not isinstance(item, Future) or item.key in values
        )
    if isinstance(obj, dict):
        return {
            k: _replace_futures(v, values)
            for k, v in obj.items()
            if not isinstance(v, Future) or v.key in values
        }
    return obj


_actors.current_client = Client.current
