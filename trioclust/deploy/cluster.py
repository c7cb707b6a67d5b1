"""``Cluster``: what every cluster manager shares; each supplies only its jobs.

Theory of operation
-------------------
A cluster is a :class:`~trioclust.runtime.server.Server`: its ``serve()``
owns a nursery holding the scheduler (or what reaches it) and the worker
*jobs*. A job is whatever one start of a worker spec makes: a Nanny on this
machine, a remote process, a batch job; it may hold several workers
(``workers_per_job``). A manager implements four hooks:

* ``_start_scheduler(nursery)``: start the scheduler and return its address;
* ``_new_job(name)``: a job object with ``serve(task_status=...)`` and ``close()``;
* ``_job_addresses(job)``: the addresses of its registered workers;
* ``_job_logs(job)`` and ``_scheduler_logs()``: recent log lines.

Everything else lives here once: ``scale(n)`` (also ``cores=``, ``memory=``,
``jobs=``) starts jobs or retires the newest through the scheduler (their data
moves first), :meth:`adapt` runs :class:`~trioclust.deploy.adaptive.Adaptive`
in the same nursery, ``get_logs``, ``wait_for_workers``, the repr, and the
three ways to use it: synchronous (the cluster runs on a
:class:`~trioclust.loop_thread.LoopThread` entered through a
:class:`~trioclust.loop_thread.HostedContext`, so interpreter exit closes it),
``async with`` under trio (the caller's loop), and under asyncio (a trio
thread, the Server base).

The cluster talks to its scheduler through :meth:`_scheduler_request`: a
manager with the scheduler in this process answers in place; others open a
``client`` link to it (:meth:`_connect_scheduler`).
"""

from __future__ import annotations

import html
import itertools
import logging
import math
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any, Protocol, Self

import trio

from trioclust import config
from trioclust.comm import Link
from trioclust.comm import connect as comm_connect
from trioclust.loop_thread import HostedContext, LoopThread
from trioclust.runtime.server import Server
from trioclust.security import Security
from trioclust.sizes import format_bytes, parse_bytes

__all__ = ["Cluster", "Job"]

logger = logging.getLogger("trioclust.deploy")


class Job(Protocol):
    """One start of a cluster's worker spec (a Nanny, a remote process, a batch job)."""

    async def serve(self, *, task_status: trio.TaskStatus[Any] = ...) -> None: ...

    async def close(self) -> None: ...


class Cluster(Server):
    """The base of LocalCluster, SSHCluster and SLURMCluster.

    Args:
        asynchronous: True inside async code: ``async with Cluster(asynchronous=True)``.
        name: a name for the repr.
        threads_per_worker: threads of each worker (for ``scale(cores=)`` and the repr).
        memory_limit: bytes of each worker, 0 for none (``scale(memory=)``, repr).
        workers_per_job: workers one job runs.
        security: the Security of the scheduler and workers, or None.
    """

    #: the name in the repr
    cluster_type = "Cluster"

    def __init__(
        self,
        *,
        asynchronous: bool,
        name: str,
        threads_per_worker: int,
        memory_limit: int,
        workers_per_job: int = 1,
        security: Security | None = None,
    ) -> None:
        super().__init__()
        self.asynchronous = asynchronous
        self.name = name
        self.threads_per_worker = threads_per_worker
        self.memory_limit = memory_limit
        self.workers_per_job = workers_per_job
        #: the Security of the scheduler and workers (None without TLS)
        self.security = security
        #: running jobs by name, oldest first
        self.workers: dict[str, Any] = {}
        #: the running :class:`~trioclust.deploy.adaptive.Adaptive`, if adapt() was called
        self.adaptive: Any = None
        self._scheduler_address = ""
        self._scheduler_link: Link | None = None
        self._names = itertools.count()
        self._nursery: trio.Nursery | None = None
        self._loop: LoopThread | None = None
        self._hosted: HostedContext | None = None
        self._jobs_changed = trio.Event()
        self._scaling = trio.Lock()

    # ------------------------------------------------------- manager hooks
    async def _start_scheduler(self, nursery: trio.Nursery) -> str:
        """Start the scheduler (or reach it) and return its address."""
        raise NotImplementedError

    async def _close_scheduler(self) -> None:
        """Close the scheduler once the jobs have closed."""

    def _new_job(self, name: str) -> Job:
        """A job running one start of the worker spec, not started yet."""
        raise NotImplementedError

    def _job_addresses(self, job: Any) -> list[str]:
        """The addresses of the workers a job runs, once registered."""
        raise NotImplementedError

    def _job_logs(self, job: Any) -> dict[str, str]:
        """Recent log lines of a job's workers, by address (or job name)."""
        return {}

    def _scheduler_logs(self) -> str:
        """Recent log lines of the scheduler."""
        return ""

    def _initial_jobs(self) -> int:
        """Jobs to start with the cluster."""
        return 0

    # --------------------------------------------------------- life cycle
    def _start_sync(self) -> None:
        self._hosted = HostedContext(self, self, name=f"trioclust-{self.cluster_type}-{self.name}")
        self._loop = self._hosted.loop

    def __enter__(self) -> Self:
        if self.asynchronous:
            raise TypeError(f"Use 'async with' for an asynchronous {self.cluster_type}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> Any:  # type: ignore[override]
        """Close the workers, then the scheduler; nothing is left running.

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
        """Run the scheduler and the jobs until closed."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    self._scheduler_address = await self._start_scheduler(nursery)
                    await self._scale_jobs(self._initial_jobs())
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await self._shutdown()
                    raise
                self.status = "running"
                task_status.started(self)
                await self._close_requested.wait()
                with trio.CancelScope(shield=True):
                    await self._shutdown()
                nursery.cancel_scope.cancel()
        finally:
            self.status = "closed"
            self._closed.set()

    async def _shutdown(self) -> None:
        with trio.move_on_after(4 * config.get_float("runtime.close-timeout")):
            if self.adaptive is not None:
                self.adaptive.stop()
            await self._close_jobs(list(self.workers))
            if self._scheduler_link is not None:
                await self._scheduler_link.aclose()
            await self._close_scheduler()

    async def _connect_scheduler(self, address: str, nursery: trio.Nursery) -> None:
        """Open the ``client`` link that :meth:`_scheduler_request` uses."""
        comm = await comm_connect(
            address, role="client", name=f"{self.cluster_type}-{self.name}", security=self.security
        )
        self._scheduler_link = link = Link(comm, {}, name=f"{self.cluster_type} -> scheduler")
        nursery.start_soon(link.run)

    async def _scheduler_request(self, op: str, **fields: Any) -> Any:
        """A request to the scheduler (``retire-workers``, ``adaptive-workload``, ...)."""
        if self._scheduler_link is None:
            raise RuntimeError(f"{self.cluster_type} has no link to its scheduler")
        if op == "retire-workers":
            return await self._scheduler_link.request("retire-workers", **fields)
        if op == "wait-for-workers":
            return await self._scheduler_link.request("wait-for-workers", **fields)
        if op == "adaptive-workload":
            return await self._scheduler_link.request("adaptive-workload")
        raise ValueError(f"unknown scheduler request {op!r}")

    # ------------------------------------------------------------ scaling
    def _notify_jobs_changed(self) -> None:
        self._jobs_changed.set()
        self._jobs_changed = trio.Event()

    async def wait_for_jobs(self, n: int) -> None:
        """Wait until exactly ``n`` jobs run (in the cluster's loop)."""
        while len(self.workers) != n:
            await self._jobs_changed.wait()

    async def _start_job(self) -> None:
        assert self._nursery is not None
        name = str(next(self._names))
        job = self._new_job(name)
        await self._nursery.start(job.serve)
        self.workers[name] = job
        self._notify_jobs_changed()

    async def _close_jobs(self, names: list[str]) -> None:
        async with trio.open_nursery() as nursery:
            for name in names:
                job = self.workers.pop(name, None)
                if job is not None:
                    nursery.start_soon(job.close)
        if names:
            self._notify_jobs_changed()

    async def _scale_jobs(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"Cannot scale to {n} jobs")
        async with self._scaling:
            current = len(self.workers)
            if n > current:
                try:
                    async with trio.open_nursery() as starters:
                        for _ in range(n - current):
                            starters.start_soon(self._start_job)
                except BaseExceptionGroup as group:
                    # one job failed to start (the others were cancelled):
                    # its ClusterStartError is what the caller catches
                    if len(group.exceptions) == 1:
                        raise group.exceptions[0] from None
                    raise
            elif n < current:
                await self._retire_jobs(list(self.workers)[n:])

    async def _retire_jobs(self, names: list[str]) -> None:
        addresses = [a for name in names for a in self._job_addresses(self.workers[name])]
        if addresses:
            await self._scheduler_request("retire-workers", workers=addresses)
        await self._close_jobs(names)

    async def _retire_workers(self, addresses: list[str]) -> None:
        """Retire these workers; close each job whose workers are all among them."""
        async with self._scaling:
            leaving = set(addresses)
            names = [
                name for name, job in self.workers.items()
                if (found := self._job_addresses(job)) and set(found) <= leaving
            ]
            await self._retire_jobs(names)

    def _jobs_for(
        self, n: int | None, cores: int | None, memory: str | int | None, jobs: int | None
    ) -> int:
        if jobs is not None:
            return jobs
        workers = n or 0
        if cores is not None:
            workers = max(workers, math.ceil(cores / max(self.threads_per_worker, 1)))
        if memory is not None:
            if not self.memory_limit:
                raise ValueError(f"scale(memory=...) needs a memory limit per worker on {self!r}")
            workers = max(workers, math.ceil(parse_bytes(memory) / self.memory_limit))
        return math.ceil(workers / self.workers_per_job)

    def scale(
        self,
        n: int | None = None,
        *,
        cores: int | None = None,
        memory: str | int | None = None,
        jobs: int | None = None,
    ) -> Any:
        """Grow or shrink to ``n`` workers, or to enough for ``cores``/``memory``, or to ``jobs``.

        Shrinking retires the newest jobs gracefully (their data moves to the
        others first). Scaling by hand stops :meth:`adapt`. Awaitable when asynchronous.

        Args:
            n: workers wanted.
            cores: threads wanted, in all.
            memory: memory wanted, in all (``"64GiB"`` or bytes).
            jobs: jobs wanted (each runs ``workers_per_job`` workers).
        """
        return self._run(self._scale_by_hand, self._jobs_for(n, cores, memory, jobs))

    async def _scale_by_hand(self, jobs: int) -> None:
        if self.adaptive is not None:
            self.adaptive.stop()
            self.adaptive = None
        await self._scale_jobs(jobs)

    def adapt(
        self,
        minimum: int = 0,
        maximum: float = math.inf,
        interval: str | float = "1s",
        wait_count: int = 3,
        target_duration: str | float = "5s",
        *,
        minimum_memory: str | int | None = None,
        maximum_memory: str | int | None = None,
        minimum_cores: int | None = None,
        maximum_cores: int | None = None,
    ) -> Any:
        """Scale with the work between ``minimum`` and ``maximum`` workers (Dask's rule).

        Returns the :class:`~trioclust.deploy.adaptive.Adaptive` (awaitable when asynchronous).

        Args:
            minimum: fewest workers.
            maximum: most workers.
            interval: time between decisions (``"1s"``, seconds).
            wait_count: consecutive decisions naming a worker before it is retired.
            target_duration: how long the queued work should take (``"5s"``).
            minimum_memory: raises ``minimum`` to workers holding this much memory.
            maximum_memory: lowers ``maximum`` to workers holding this much memory.
            minimum_cores: raises ``minimum`` to workers with this many threads.
            maximum_cores: lowers ``maximum`` to workers with this many threads.
        """
        from trioclust.deploy.adaptive import Adaptive, parse_seconds

        if minimum_cores is not None:
            minimum = max(minimum, math.ceil(minimum_cores / self.threads_per_worker))
        if maximum_cores is not None:
            maximum = min(maximum, maximum_cores // self.threads_per_worker)
        if self.memory_limit:
            if minimum_memory is not None:
                minimum = max(minimum, math.ceil(parse_bytes(minimum_memory) / self.memory_limit))
            if maximum_memory is not None:
                maximum = min(maximum, parse_bytes(maximum_memory) // self.memory_limit)
        adaptive = Adaptive(
            self, minimum=minimum, maximum=maximum, interval=parse_seconds(interval),
            wait_count=wait_count, target_duration=parse_seconds(target_duration),
        )
        return self._run(self._start_adaptive, adaptive)

    async def _start_adaptive(self, adaptive: Any) -> Any:
        assert self._nursery is not None
        if self.adaptive is not None:
            self.adaptive.stop()
        self.adaptive = adaptive
        await self._nursery.start(adaptive.serve)
        return adaptive

    def wait_for_workers(self, n_workers: int, timeout: float | None = None) -> Any:
        """Wait until ``n_workers`` workers are registered. Awaitable when asynchronous."""
        return self._run(self._wait_for_workers, n_workers, timeout)

    async def _wait_for_workers(self, n: int, timeout: float | None) -> None:
        with trio.fail_after(timeout if timeout is not None else math.inf):
            await self._scheduler_request("wait-for-workers", n=n)

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
        if not self._scheduler_address:
            raise RuntimeError("The cluster is not running")
        return self._scheduler_address

    @property
    def dashboard_link(self) -> str | None:
        """The URL of the dashboard's status page, or None."""
        return None

    def get_logs(self) -> dict[str, str]:
        """Recent log lines of the scheduler and of each worker, by who wrote them.

        Keys: ``"Scheduler"`` and each worker's address (or its job's name
        before it registered); values: the lines, newline-separated, oldest first.
        """
        logs = {"Scheduler": self._scheduler_logs()}
        for job in list(self.workers.values()):
            logs.update(self._job_logs(job))
        return logs

    def _summary(self) -> tuple[int, int, int]:
        n = len(self.workers) * self.workers_per_job
        return n, n * self.threads_per_worker, n * self.memory_limit

    def __repr__(self) -> str:
        n, threads, memory = self._summary()
        address = self._scheduler_address or "not running"
        dashboard = f", dashboard={self.dashboard_link}" if self.dashboard_link else ""
        return (
            f"{self.cluster_type}({self.name}, {address!r}, workers={n}, threads={threads}, "
            f"memory={format_bytes(memory)}{dashboard})"
        )

    def _repr_html_(self) -> str:
        n, threads, memory = self._summary()
        rows = [
            ("Scheduler", self._scheduler_address or "not running"),
            ("Dashboard", self.dashboard_link or "off"),
            ("Workers", str(n)),
            ("Threads", str(threads)),
            ("Memory", format_bytes(memory)),
        ]
        if self.adaptive is not None:
            rows.append(("Adaptive", f"{self.adaptive.minimum} to {self.adaptive.maximum} workers"))
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        return (
            f"<div><strong>{html.escape(self.cluster_type)} {html.escape(self.name)}</strong>"
            f"<table>{body}</table></div>"
        )
