"""``LocalCluster``: a scheduler and workers on this machine, sized to it.

Theory of operation
-------------------
A LocalCluster is a :class:`~trioclust.deploy.cluster.Cluster`: its
``serve()`` owns a nursery holding the Scheduler and one Nanny per worker
process (or in-process Workers on ``inproc://`` with ``processes=False``);
each of them is one job of the base. Scaling starts more of them in that
nursery, or retires some through the scheduler, which moves their data to
the remaining workers first. The scheduler lives in this process, so the
base's requests to it are answered in place.

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

import uuid
from typing import Any, Self

import sniffio
import trio

from trioclust import config
from trioclust.client.client import set_cluster_factory
from trioclust.deploy.cluster import Cluster
from trioclust.deploy.sizing import cpu_count, memory_limit_per_worker, workers_and_threads
from trioclust.runtime.log_capture import RecentLogs
from trioclust.runtime.nanny import Nanny
from trioclust.runtime.scheduler import Scheduler
from trioclust.runtime.worker import Worker
from trioclust.security import Security


class LocalCluster(Cluster):
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
        **worker_kwargs: passed on to each Worker/Nanny (e.g. ``reconnect_timeout``, or
            ``resources={"GPU": 1}``: every worker then has one GPU).
    """

    cluster_type = "LocalCluster"

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
        if n_workers is not None and n_workers < 0:
            raise ValueError(f"n_workers must be 0 or more, got {n_workers}")
        n, threads = workers_and_threads(cpu_count(), n_workers, threads_per_worker, processes)
        if security is True:
            security = Security.temporary()
        super().__init__(
            asynchronous=asynchronous, name=name or uuid.uuid4().hex[:8],
            threads_per_worker=threads, memory_limit=memory_limit_per_worker(memory_limit, max(n, 1)),
            security=security if isinstance(security, Security) else None,
        )
        self.n_workers = n
        self.processes = processes
        self.host = host
        self.scheduler_port = scheduler_port
        self.dashboard_address = (
            str(config.get("scheduler.dashboard-address"))
            if dashboard_address == "config"
            else dashboard_address
        )
        self.worker_kwargs = worker_kwargs
        self.scheduler: Scheduler | None = None
        self.workers: dict[str, Nanny | Worker] = {}
        default = self.security.default_protocol if self.security is not None else "tcp"
        self._protocol = protocol or (default if processes else "inproc")
        self._network_protocol = protocol or default  # where inproc cannot reach
        self._logs = RecentLogs()
        if not asynchronous:
            self._start_sync()

    # --------------------------------------------------------- life cycle
    async def __aenter__(self) -> Self:
        if not self.processes and sniffio.current_async_library() != "trio":
            self._protocol = self._network_protocol  # inproc:// is unreachable from the caller's loop
        return await super().__aenter__()

    async def serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the scheduler and the workers until closed."""
        self._logs.install()
        try:
            await super().serve(task_status=task_status)
        finally:
            self._logs.uninstall()

    # ------------------------------------------------------ the base's hooks
    async def _start_scheduler(self, nursery: trio.Nursery) -> str:
        scheduler = Scheduler(
            host=self.host, port=self.scheduler_port, protocol=self._protocol,
            dashboard_address=self.dashboard_address, security=self.security,
        )
        await nursery.start(scheduler.serve)
        self.scheduler = scheduler
        return scheduler.address

    async def _close_scheduler(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.close()

    def _initial_jobs(self) -> int:
        return self.n_workers

    def _new_job(self, name: str) -> Nanny | Worker:
        assert self.scheduler is not None
        if self.processes:
            return Nanny(
                self.scheduler.address, nthreads=self.threads_per_worker, name=name,
                memory_limit=self.memory_limit, host=self.host, security=self.security,
                **self.worker_kwargs,
            )
        return Worker(
            self.scheduler.address, nthreads=self.threads_per_worker, name=name,
            memory_limit=self.memory_limit, security=self.security, **self.worker_kwargs,
        )

    def _job_addresses(self, job: Nanny | Worker) -> list[str]:
        address = _address_of(job)
        return [address] if address else []

    def _job_logs(self, job: Nanny | Worker) -> dict[str, str]:
        address = _address_of(job) or str(job.name)
        if isinstance(job, Nanny):
            lines = list(job.recent_logs)
        else:
            lines = list(self._logs.lines.get(address, ()))
        return {address: "\n".join(lines)}

    def _scheduler_logs(self) -> str:
        return "\n".join(self._logs.lines.get("Scheduler", ()))

    async def _scheduler_request(self, op: str, **fields: Any) -> Any:
        scheduler = self.scheduler
        if scheduler is None:
            raise RuntimeError("The cluster is not running")
        if op == "retire-workers":
            return await scheduler.retire_workers(fields.get("workers"), fields.get("n"))
        if op == "wait-for-workers":
            return await scheduler.wait_for_workers(fields["n"])
        if op == "adaptive-workload":
            return scheduler._client_adaptive_workload("cluster", {"op": "adaptive-workload"})
        raise ValueError(f"unknown scheduler request {op!r}")

    # ----------------------------------------------------------- inspection
    @property
    def dashboard_link(self) -> str | None:
        """The URL of the dashboard's status page that really serves, or None."""
        if self.scheduler is None:
            return None
        return getattr(self.scheduler, "dashboard_link", None)


def _address_of(worker: Nanny | Worker) -> str | None:
    return worker.worker_address if isinstance(worker, Nanny) else (worker.address or None)



set_cluster_factory(LocalCluster)
