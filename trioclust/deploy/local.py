"""``LocalCluster``: a scheduler and workers on this machine, sized to it.

Theory of operation
-------------------
A LocalCluster is a :class:`~trioclust.runtime.server.Server` like the others:
its ``serve()`` owns a nursery holding the Scheduler and one Nanny per worker
process (or in-process Workers on ``inproc://`` with ``processes=False``).
Scaling starts more of them in that nursery, or retires some through the
scheduler, which moves their data to the remaining workers first.

It runs its trio loop wherever the user is:

* synchronous (the default): on a :class:`~trioclust.loop_thread.LoopThread`
  of its own, entered and closed through a
  :class:`~trioclust.loop_thread.HostedContext`; a ``Client(cluster)`` of a
  ``processes=False`` cluster shares that loop (its ``inproc://`` messages
  then cross no thread), while other clients reach it from their own loops;
* ``asynchronous=True`` under trio: in the caller's loop;
* ``asynchronous=True`` under asyncio: on a trio thread (the Server base).
  In-process workers then use TCP on 127.0.0.1, so asyncio clients reach them.
"""

from __future__ import annotations

import html
import itertools
import uuid
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any, Self

import sniffio
import trio

from trioclust import config
from trioclust.client.client import set_cluster_factory
from trioclust.deploy.sizing import cpu_count, memory_limit_per_worker, workers_and_threads
from trioclust.loop_thread import HostedContext, LoopThread
from trioclust.runtime.log_capture import RecentLogs
from trioclust.runtime.nanny import Nanny
from trioclust.runtime.scheduler import Scheduler
from trioclust.runtime.server import Server
from trioclust.runtime.worker import Worker
from trioclust.security import Security
from trioclust.sizes import format_bytes


class LocalCluster(Server):
    """A scheduler and workers on this machine, sized to it by default.

    Args:
        n_workers: worker processes (or in-process workers); default from the
            core count, the way dask splits cores into workers x threads.
        threads_per_worker: threads per worker; default from the core count.
        processes: True (default): each worker in its own process under a
            nanny that restarts it; False: workers in this process on ``inproc://``.
        memory_limit: per worker: ``"auto"`` (the machine's memory split
            evenly), a size (``"4GiB"``, bytes), a fraction, or None.
        scheduler_port: the scheduler's port; 0 (default) picks a free one.
        dashboard_address: where the dashboard listens, e.g. ``":8787"``
            (port 8787 on ``host``); None for no dashboard; by default the
            config's ``scheduler.dashboard-address`` (``":8787"``).
        host: interface to listen on; default 127.0.0.1, so nothing listens
            on outside interfaces unless asked.
        asynchronous: True inside async code: ``async with LocalCluster(asynchronous=True)``.
        name: a name for the repr; default a random one.
        security: ``True`` for :meth:`Security.temporary` (a fresh CA and
            certificates, in memory only, handed to the worker processes
            through their stdin), or a :class:`~trioclust.Security`; the
            scheduler and workers then speak ``tls://`` and
            ``Client(cluster)`` uses the same Security. In-process workers
            (``processes=False``) stay on ``inproc://``, which never leaves
            the process.
        protocol: the scheduler's transport scheme instead of the default
            (``"tcp"``, ``"tls"`` with security, ``"inproc"`` without
            processes): ``"ws"``, ``"wss"``...
        **worker_kwargs: passed on to each Worker/Nanny (e.g. ``reconnect_timeout``).
    """

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool = True,
        memory_limit: str | int | float | None = "auto",
        scheduler_port: int = 0,
        dashboard_address: str | None = "config",
        host: str = "127.0.0.1",
        asynchronous: bool = False,
        name: str | None = None,
        security: Security | bool | None = None,
        protocol: str | None = None,
        **worker_kwargs: Any,
    ) -> None:
        super().__init__()
        if n_workers is not None and n_workers < 0:
            raise ValueError(f"n_workers must be 0 or more, got {n_workers}")
        self.n_workers, self.threads_per_worker = workers_and_threads(
            cpu_count(), n_workers, threads_per_worker, processes
        )
        self.memory_limit = memory_limit_per_worker(memory_limit, max(self.n_workers, 1))
        self.processes = processes
        self.host = host
        self.scheduler_port = scheduler_port
        self.dashboard_address = (
            str(config.get("scheduler.dashboard-address"))
            if dashboard_address == "config"
            else dashboard_address
        )
        self.asynchronous = asynchronous
        self.name = name or uuid.uuid4().hex[:8]
        self.worker_kwargs = worker_kwargs
        self.scheduler: Scheduler | None = None
        self.workers: dict[str, Nanny | Worker] = {}
        if security is True:
            security = Security.temporary()
        #: the Security of the scheduler and workers (None without TLS)
        self.security: Security | None = security if isinstance(security, Security) else None
        default = self.security.default_protocol if self.security is not None else "tcp"
        self._protocol = protocol or (default if processes else "inproc")
        self._network_protocol = protocol or default  # where inproc cannot reach
        self._names = itertools.count()
        self._logs = RecentLogs()
        self._nursery: trio.Nursery | None = None
        self._loop: LoopThread | None = None
        self._hosted: HostedContext | None = None
        if not asynchronous:
            self._start_sync()

    # --------------------------------------------------------- life cycle
    def _start_sync(self) -> None:
        self._hosted = HostedContext(self, self, name=f"trioclust-LocalCluster-{self.name}")
        self._loop = self._hosted.loop

    async def __aenter__(self) -> Self:
        if not self.processes and sniffio.current_async_library() != "trio":
            self._protocol = self._network_protocol  # inproc:// is unreachable from the caller's loop
        return await super().__aenter__()

    def __enter__(self) -> Self:
        if self.asynchronous:
            raise TypeError("Use 'async with' for an asynchronous LocalCluster")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> Any:  # type: ignore[override]
        """Close the workers, then the scheduler; no process is left behind.

        Awaitable when asynchronous.
        """
        if self.asynchronous:
            return super().close()
        if self._hosted is not None:
            hosted, self._hosted = self._hosted, None
            try:
                hosted.close()
            finally:
                self._loop = None
        return None

    async def serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the scheduler and the workers until closed."""
        self._logs.install()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                scheduler = Scheduler(
                    host=self.host, port=self.scheduler_port, protocol=self._protocol,
                    dashboard_address=self.dashboard_address, security=self.security,
                )
                await nursery.start(scheduler.serve)
                self.scheduler = scheduler
                await self._scale(self.n_workers)
                self.status = "running"
                task_status.started(self)
                await self._close_requested.wait()
                with trio.move_on_after(4 * config.get_float("runtime.close-timeout")) as scope:
                    scope.shield = True
                    await self._close_workers(list(self.workers))
                    await scheduler.close()
                nursery.cancel_scope.cancel()
        finally:
            self._logs.uninstall()
            self.status = "closed"
            self._closed.set()

    # ------------------------------------------------------------ scaling
    async def _start_worker(self) -> None:
        assert self.scheduler is not None
        assert self._nursery is not None
        name = str(next(self._names))
        kwargs = dict(self.worker_kwargs)
        worker: Nanny | Worker
        if self.processes:
            worker = Nanny(
                self.scheduler.address, nthreads=self.threads_per_worker, name=name,
                memory_limit=self.memory_limit, host=self.host, security=self.security, **kwargs,
            )
        else:
            worker = Worker(
                self.scheduler.address, nthreads=self.threads_per_worker, name=name,
                memory_limit=self.memory_limit, security=self.security, **kwargs,
            )
        await self._nursery.start(worker.serve)
        self.workers[name] = worker

    async def _close_workers(self, names: list[str]) -> None:
        async with trio.open_nursery() as nursery:
            for name in names:
                worker = self.workers.pop(name, None)
                if worker is not None:
                    nursery.start_soon(worker.close)

    async def _scale(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"Cannot scale to {n} workers")
        current = len(self.workers)
        if n > current:
            async with trio.open_nursery() as starters:
                for _ in range(n - current):
                    starters.start_soon(self._start_worker)
        elif n < current:
            assert self.scheduler is not None
            victims = list(self.workers)[n:]
            addresses = [a for a in (_address_of(self.workers[v]) for v in victims) if a]
            await self.scheduler.retire_workers(addresses)
            await self._close_workers(victims)

    def scale(self, n: int) -> Any:
        """Grow or shrink to ``n`` workers; shrinking retires workers gracefully
        (their data moves to the others first). Awaitable when asynchronous."""
        return self._run(self._scale, n)

    def wait_for_workers(self, n_workers: int, timeout: float | None = None) -> Any:
        """Wait until ``n_workers`` workers are registered. Awaitable when asynchronous."""
        return self._run(self._wait_for_workers, n_workers, timeout)

    async def _wait_for_workers(self, n: int, timeout: float | None) -> None:
        assert self.scheduler is not None
        with trio.fail_after(timeout if timeout is not None else float("inf")):
            await self.scheduler.wait_for_workers(n)

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call an async method in the cluster's loop, the way this cluster is used."""
        if self._loop is not None:
            return self._loop.portal.call(partial(fn, *args))
        if self._in_foreign_loop():  # asynchronous, under asyncio: the loop is our thread
            return self._call_hosted(fn, *args)
        return fn(*args)

    # ----------------------------------------------------------- inspection
    @property
    def scheduler_address(self) -> str:
        """The scheduler's address, for ``Client(cluster.scheduler_address)``."""
        if self.scheduler is None:
            raise RuntimeError("The cluster is not running")
        return self.scheduler.address

    @property
    def dashboard_link(self) -> str | None:
        """The URL of the dashboard's status page that really serves, or None."""
        if self.scheduler is None:
            return None
        return getattr(self.scheduler, "dashboard_link", None)

    def get_logs(self) -> dict[str, str]:
        """Recent log lines of the scheduler and of each worker, by who wrote them.

        Keys: ``"Scheduler"`` and each worker's address; values: the lines,
        newline-separated, oldest first.
        """
        logs = {"Scheduler": "\n".join(self._logs.lines.get("Scheduler", ()))}
        for name, worker in list(self.workers.items()):
            address = _address_of(worker) or name
            if isinstance(worker, Nanny):
                lines = list(worker.recent_logs)
            else:
                lines = list(self._logs.lines.get(address, ()))
            logs[address] = "\n".join(lines)
        return logs

    def _summary(self) -> tuple[int, int, int]:
        workers = list(self.workers.values())
        return len(workers), len(workers) * self.threads_per_worker, len(workers) * self.memory_limit

    def __repr__(self) -> str:
        n, threads, memory = self._summary()
        address = self.scheduler.address if self.scheduler is not None else "not running"
        dashboard = f", dashboard={self.dashboard_link}" if self.dashboard_link else ""
        return (
            f"LocalCluster({self.name}, {address!r}, workers={n}, threads={threads}, "
            f"memory={format_bytes(memory)}{dashboard})"
        )

    def _repr_html_(self) -> str:
        n, threads, memory = self._summary()
        rows = [
            ("Scheduler", self.scheduler.address if self.scheduler else "not running"),
            ("Dashboard", self.dashboard_link or "off"),
            ("Workers", str(n)),
            ("Threads", str(threads)),
            ("Memory", format_bytes(memory)),
        ]
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        return f"<div><strong>LocalCluster {html.escape(self.name)}</strong><table>{body}</table></div>"


def _address_of(worker: Nanny | Worker) -> str | None:
    return worker.worker_address if isinstance(worker, Nanny) else (worker.address or None)



set_cluster_factory(LocalCluster)
