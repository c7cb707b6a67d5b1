"""Administering the cluster from a :class:`~trioclust.Client`: running
functions on the workers or the scheduler, where data is (``who_has``,
``has_what``) and moving it (``replicate``, ``rebalance``), restarting and
retiring workers, plugins and uploaded files, and diagnostics (task stream,
logs, profiles). A mixin of ``Client``.

Each method is one request to the scheduler through
:meth:`ClientCore.request <trioclust.client.core.ClientCore.request>`, made
through ``Client``'s ``_sync`` bridge: an awaitable with an asynchronous
client, the reply with a synchronous one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from trioclust.client.diagnostics import TaskStreamRecording, as_log
from trioclust.client.future_ops import _collect_futures
from trioclust.client.futures import Future
from trioclust.client.keys import funcname
from trioclust.client.plugins import NannyPlugin, SchedulerPlugin, WorkerPlugin
from trioclust.client.results import deserialized
from trioclust.protocol import serialize
from trioclust.protocol.messages import Key

if TYPE_CHECKING:
    from trioclust.client.client import Client
    from trioclust.client.core import ClientCore


class ClusterAdmin:
    """``Client``'s cluster administration and diagnostics (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Client's

        scheduler_address: str
        _core: ClientCore

        def _sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...

    # -------------------------------------- data, restarts, plugins, files
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
        return TaskStreamRecording(cast("Client", self), start, stop, count)

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

