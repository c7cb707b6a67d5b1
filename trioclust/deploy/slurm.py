"""``SLURMCluster``: a scheduler here, workers in SLURM batch jobs (dask-jobqueue's shape).

Theory of operation
-------------------
The scheduler runs in this process, listening on an address the compute
nodes reach (``interface=``, ``scheduler_options={"host": ...}``, or the
address this machine routes outwards from). Each *job* of the
:class:`~trioclust.deploy.cluster.Cluster` base is one SLURM batch job: a
script (:meth:`SLURMCluster.job_script`) whose last line ``exec``\\ s
``python -m trioclust.cli.main worker ADDRESS`` with ``processes`` workers of
``cores / processes`` threads, named ``<cluster name>-<job name>`` (``-0``,
``-1``, ... with several), so ``scancel`` reaches the workers themselves.

:class:`SLURMJob` submits the script on ``sbatch --parsable``'s stdin and
reads the job id it prints. It is *started* once its workers registered at
the scheduler; until then it asks ``squeue`` for the job's state and reason
every ``poll_interval`` seconds. A job that ends first, that pends for a
reason that cannot clear by waiting (``PartitionConfig``: more CPUs than any
node has; ``BadConstraints``; an invalid account...), or that has not
started within ``start_timeout`` seconds is cancelled and raises
:class:`~trioclust.errors.ClusterStartError` with SLURM's state and reason
and the last lines of the job's output. ``sbatch`` refusing the job (an
unknown partition) raises at once, quoting ``sbatch``.

Scaling, adapt, retirement and logs are the base's: scaling down retires the
newest jobs' workers (their data moves first), then ``scancel``\\ s the jobs
and waits (bounded) until SLURM lists them no more; ``close()`` does that
for every job, then closes the scheduler.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import socket
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import trio

from trioclust import config
from trioclust.deploy.cluster import Cluster
from trioclust.deploy.sizing import workers_and_threads
from trioclust.errors import ClusterStartError
from trioclust.runtime.log_capture import RecentLogs
from trioclust.runtime.scheduler import Scheduler
from trioclust.sizes import parse_bytes

__all__ = ["SLURMCluster", "SLURMJob", "slurm_format_bytes_ceil"]

#: pending reasons (squeue's ``%r``) that waiting does not clear
NEVER_STARTS = frozenset({
    "AccountNotAllowed", "BadConstraints", "DependencyNeverSatisfied", "InvalidAccount",
    "InvalidQOS", "JobHeldAdmin", "JobHeldUser", "PartitionConfig", "PartitionDown",
    "PartitionInactive", "PartitionNodeLimit", "PartitionTimeLimit", "QOSNotAllowed",
})
#: job states (squeue's ``%T``) in which a job still may run its workers
LIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED"})
#: lines of a job's output quoted in errors and returned by get_logs()
LOG_LINES = 50


def slurm_format_bytes_ceil(n: int) -> str:
    """Bytes as ``--mem`` takes them, rounded up: ``1073741824`` -> ``"1G"``, at least ``"1K"``."""
    for unit, size in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= size:
            return f"{math.ceil(n / size)}{unit}"
    return "1K"


def _interface_address(interface: str) -> str:
    addresses = psutil.net_if_addrs()
    if interface not in addresses:
        raise ValueError(f"No network interface {interface!r} here; there are {sorted(addresses)}")
    for address in addresses[interface]:
        if address.family == socket.AF_INET:
            return str(address.address)
    raise ValueError(f"Network interface {interface!r} has no IPv4 address")


def _outward_address() -> str:
    """The address this machine sends from towards other machines (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _tail(path: Path, n: int = LOG_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


class SLURMJob:
    """One SLURM batch job running a worker command (a job of :class:`SLURMCluster`).

    Args:
        cluster: the cluster it belongs to.
        name: its name in the cluster; its workers are ``<cluster name>-<name>`` (``-0``, ...).
    """

    def __init__(self, cluster: SLURMCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.worker_name = f"{cluster.name}-{name}"
        #: SLURM's id of the job, once submitted
        self.job_id: str | None = None
        self.worker_names = (
            {self.worker_name} if cluster.processes == 1
            else {f"{self.worker_name}-{i}" for i in range(cluster.processes)}
        )
        self._cancelled = False
        self._done = trio.Event()

    def __repr__(self) -> str:
        return f"<SLURMJob {self.name} id={self.job_id}>"

    async def serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Submit the job; started once its workers registered."""
        try:
            self.job_id = await self._submit()
            await self._wait_for_workers()
            task_status.started(self)
            await self._done.wait()
        finally:
            with trio.CancelScope(shield=True):
                await self._cancel()

    async def _submit(self) -> str:
        script = self.cluster._job_script(self.worker_name)
        result = await trio.run_process(
            ["sbatch", "--parsable"], stdin=script.encode(), capture_stdout=True,
            capture_stderr=True, check=False,
        )
        out = result.stdout.decode(errors="replace").strip()
        found = re.match(r"(\d+)", out)
        if result.returncode != 0 or found is None:
            err = result.stderr.decode(errors="replace").strip()
            raise ClusterStartError(
                f"sbatch refused the job for {self.worker_name} (exit {result.returncode}): "
                f"{err or out or '(no output)'}"
            )
        return found.group(1)

    async def _squeue(self) -> tuple[str, str] | None:
        """The job's state and reason, or None once SLURM no longer lists it."""
        assert self.job_id is not None
        result = await trio.run_process(
            ["squeue", "-h", "-j", self.job_id, "-o", "%T|%r"], capture_stdout=True,
            capture_stderr=True, check=False,
        )
        out = result.stdout.decode(errors="replace").strip()
        if result.returncode != 0:
            err = result.stderr.decode(errors="replace").strip()
            if "Invalid job id" in err:
                return None
            return ("UNKNOWN", f"squeue failed: {err}")
        if not out:
            return None
        state, _, reason = out.splitlines()[0].partition("|")
        return state, reason

    def _registered(self) -> list[str]:
        scheduler = self.cluster.scheduler
        if scheduler is None:
            return []
        return [a for a, info in scheduler.state.workers.items() if info.name in self.worker_names]

    async def _wait_for_workers(self) -> None:
        cluster = self.cluster
        assert cluster.scheduler is not None
        timeout = cluster.start_timeout
        deadline = trio.current_time() + (math.inf if timeout is None else timeout)
        while len(self._registered()) < len(self.worker_names):
            found = await self._squeue()
            if found is None or found[0] not in LIVE_STATES | {"UNKNOWN"}:
                state, reason = found or ("gone", "")
                raise self._error(f"it ended ({state}{f', {reason}' if reason else ''}) "
                                  "before its workers registered")
            state, reason = found
            if state == "PENDING" and reason in NEVER_STARTS:
                raise self._error(f"it cannot start: SLURM keeps it PENDING with reason {reason}")
            if trio.current_time() >= deadline:
                raise self._error(
                    f"its workers did not register within start_timeout={timeout:g} s "
                    f"(SLURM: {state}, reason {reason})"
                )
            with trio.move_on_at(min(deadline, trio.current_time() + cluster.poll_interval)):
                await cluster.scheduler.wait_for_workers(len(cluster.scheduler.state.workers) + 1)

    def _error(self, cause: str) -> ClusterStartError:
        lines = self.log_lines()
        return ClusterStartError(
            f"SLURM job {self.job_id} ({self.worker_name}) did not start its workers: {cause}; "
            f"its output ends with:\n" + ("\n".join(lines) or "(nothing)")
        )

    def log_paths(self) -> list[Path]:
        """Where SLURM writes the job's output (``log_directory``, else ``slurm-<id>.out`` here)."""
        if self.job_id is None:
            return []
        directory = self.cluster.log_directory
        if directory is None:
            return [Path(self.cluster._submit_directory) / f"slurm-{self.job_id}.out"]
        stem = f"{self.cluster.job_name}-{self.job_id}"
        return [Path(directory) / f"{stem}.err", Path(directory) / f"{stem}.out"]

    def log_lines(self) -> list[str]:
        """The last lines of the job's output."""
        return [line for path in self.log_paths() for line in _tail(path)][-LOG_LINES:]

    async def _cancel(self) -> None:
        """``scancel`` the job (once) and wait, bounded, until SLURM lists it no more."""
        if self._cancelled or self.job_id is None:
            return
        self._cancelled = True
        await trio.run_process(["scancel", self.job_id], capture_stdout=True, capture_stderr=True, check=False)
        with trio.move_on_after(4 * config.get_float("runtime.close-timeout")):
            while True:
                found = await self._squeue()
                if found is None or found[0] not in LIVE_STATES | {"COMPLETING"}:
                    break
                await trio.sleep(self.cluster.poll_interval)  # squeue is the only way to know

    async def close(self) -> None:
        """Cancel the job; its workers end with it."""
        await self._cancel()
        self._done.set()


class SLURMCluster(Cluster):
    """A scheduler in this process and workers in SLURM batch jobs, as dask-jobqueue has it.

    Each job asks for ``cores`` CPUs and ``memory`` on one node and runs
    ``processes`` workers of ``cores // processes`` threads and ``memory /
    processes`` bytes each. ``scale(jobs=n)`` (or ``scale(n)`` workers,
    ``cores=``, ``memory=``) submits jobs with ``sbatch``; scaling down and
    ``close()`` cancel them with ``scancel``; ``adapt()`` works through the base.

    Args:
        cores: CPUs per job (``--cpus-per-task``), shared by its workers' threads.
        memory: memory per job (``"16GiB"``; ``--mem``), shared by its workers.
        processes: workers per job; default about ``sqrt(cores)`` (as dask-jobqueue).
        queue: the partition (``-p``).
        account: the account charged (``-A``).
        walltime: the time limit of each job (``-t``), default ``"00:30:00"``.
        job_cpu: CPUs to ask for instead of ``cores``.
        job_mem: memory to ask for instead of ``memory`` (SLURM's syntax, ``"20G"``).
        job_extra_directives: more ``#SBATCH`` options, e.g. ``["--qos=debug"]``.
        job_directives_skip: leave out generated directives containing these strings.
        job_script_prologue: shell lines run before the workers start
            (``"source venv/bin/activate"``, ``"module load python"``).
        job_name: the jobs' name (``-J``), default ``"trioclust-worker"``.
        log_directory: where jobs write ``<job_name>-<id>.out``/``.err``;
            default SLURM's own ``slurm-<id>.out`` in the current directory.
        shebang: the script's first line.
        python: the python on the nodes, default this one (``sys.executable``).
        nanny: run each worker under a nanny that restarts it (default True).
        death_timeout: seconds a worker keeps trying to reach a lost scheduler.
        worker_extra_args: more ``trioclust worker`` options.
        interface: the network interface (``"eth0"``, ``"ib0"``) whose address
            the scheduler listens on, so workers on the nodes reach it.
        scheduler_options: ``host`` (overrides ``interface``), ``interface``,
            ``port`` (default 0: any), ``dashboard_address`` (default the
            config's ``scheduler.dashboard-address``; None for none).
        n_workers: workers to start with (as ``scale(n_workers)``).
        start_timeout: seconds from ``sbatch`` until a job's workers register
            before the job is cancelled and ClusterStartError raised; None
            waits while SLURM's reason may still clear (a busy queue).
        poll_interval: seconds between ``squeue`` calls while a job starts or ends.
        asynchronous: True inside async code.
        name: a name for the repr and the workers' names; default a random one.
    """

    cluster_type = "SLURMCluster"

    def __init__(
        self,
        cores: int | None = None,
        memory: str | int | None = None,
        processes: int | None = None,
        queue: str | None = None,
        account: str | None = None,
        walltime: str | None = "00:30:00",
        *,
        job_cpu: int | None = None,
        job_mem: str | None = None,
        job_extra_directives: Sequence[str] = (),
        job_directives_skip: Sequence[str] = (),
        job_script_prologue: Sequence[str] = (),
        job_name: str = "trioclust-worker",
        log_directory: str | os.PathLike[str] | None = None,
        shebang: str = "#!/usr/bin/env bash",
        python: str | None = None,
        nanny: bool = True,
        death_timeout: float | None = 60.0,
        worker_extra_args: Sequence[str] = (),
        interface: str | None = None,
        scheduler_options: dict[str, Any] | None = None,
        n_workers: int = 0,
        start_timeout: float | None = 60.0,
        poll_interval: float = 1.0,
        asynchronous: bool = False,
        name: str | None = None,
    ) -> None:
        if cores is None or memory is None:
            raise ValueError(
                "Say how many cores and how much memory each job has, for example "
                "SLURMCluster(cores=8, memory='24GiB')"
            )
        if processes is None:
            processes, _ = workers_and_threads(cores, None, None, processes=True)
        if processes < 1 or cores < processes:
            raise ValueError(f"processes={processes} must be between 1 and cores={cores}")
        job_memory = parse_bytes(memory)
        super().__init__(
            asynchronous=asynchronous, name=name or uuid.uuid4().hex[:8],
            threads_per_worker=cores // processes, memory_limit=job_memory // processes,
            workers_per_job=processes,
        )
        self.cores = cores
        self.memory = job_memory
        self.processes = processes
        self.queue = queue
        self.account = account
        self.walltime = walltime
        self.job_cpu = job_cpu
        self.job_mem = job_mem
        self.job_extra_directives = list(job_extra_directives)
        self.job_directives_skip = list(job_directives_skip)
        self.job_script_prologue = list(job_script_prologue)
        self.job_name = job_name
        self.log_directory = None if log_directory is None else str(log_directory)
        self.shebang = shebang
        self.python = python or sys.executable
        self.nanny = nanny
        self.death_timeout = death_timeout
        self.worker_extra_args = list(worker_extra_args)
        self.scheduler_options = dict(scheduler_options or {})
        self.interface = interface
        self.start_timeout = start_timeout
        self.poll_interval = poll_interval
        self.n_workers = n_workers
        self.scheduler: Scheduler | None = None
        self.workers: dict[str, SLURMJob] = {}
        self._submit_directory = os.getcwd()
        self._logs = RecentLogs()
        self._host = self._scheduler_host()  # a bad interface fails here, not in the loop
        if self.log_directory is not None:
            Path(self.log_directory).mkdir(parents=True, exist_ok=True)
        if not asynchronous:
            self._start_sync()

    def _scheduler_host(self) -> str:
        options = self.scheduler_options
        if options.get("host"):
            return str(options["host"])
        interface = options.get("interface") or self.interface
        if interface:
            return _interface_address(str(interface))
        return _outward_address()

    # ----------------------------------------------------------- the script
    def _job_header(self) -> list[str]:
        lines = [f"#SBATCH -J {self.job_name}"]
        if self.log_directory is not None:
            lines += [
                f"#SBATCH -e {self.log_directory}/{self.job_name}-%J.err",
                f"#SBATCH -o {self.log_directory}/{self.job_name}-%J.out",
            ]
        if self.queue is not None:
            lines.append(f"#SBATCH -p {self.queue}")
        if self.account is not None:
            lines.append(f"#SBATCH -A {self.account}")
        lines += ["#SBATCH -n 1", "#SBATCH -N 1", f"#SBATCH --cpus-per-task={self.job_cpu or self.cores}"]
        lines.append(f"#SBATCH --mem={self.job_mem or slurm_format_bytes_ceil(self.memory)}")
        if self.walltime is not None:
            lines.append(f"#SBATCH -t {self.walltime}")
        lines = [line for line in lines if not any(skip in line for skip in self.job_directives_skip)]
        return lines + [f"#SBATCH {directive}" for directive in self.job_extra_directives]

    def _worker_command(self, address: str, name: str) -> str:
        args = [
            self.python, "-m", "trioclust.cli.main", "worker", address,
            "--nworkers", str(self.processes), "--nthreads", str(self.threads_per_worker),
            "--memory-limit", str(self.memory_limit), "--name", name,
        ]
        if self.death_timeout is not None:
            args += ["--death-timeout", f"{self.death_timeout:g}"]
        if not self.nanny:
            args.append("--no-nanny")
        return " ".join(shlex.quote(a) for a in [*args, *self.worker_extra_args])

    def _job_script(self, worker_name: str) -> str:
        address = self._scheduler_address or "tcp://<scheduler-address>:<port>"
        parts = [
            self.shebang, "", *self._job_header(), *self.job_script_prologue,
            f"exec {self._worker_command(address, worker_name)}",  # so scancel's signal reaches it
        ]
        return "\n".join(parts) + "\n"

    def job_script(self) -> str:
        """The batch script each job runs (its workers' name shown as ``<cluster name>-<job>``)."""
        return self._job_script(f"{self.name}-<job>")

    # ------------------------------------------------------ the base's hooks
    async def serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the scheduler and the jobs until closed."""
        self._logs.install()
        try:
            await super().serve(task_status=task_status)
        finally:
            self._logs.uninstall()

    async def _start_scheduler(self, nursery: trio.Nursery) -> str:
        options = self.scheduler_options
        dashboard = options.get("dashboard_address", config.get("scheduler.dashboard-address"))
        scheduler = Scheduler(
            host=self._host, port=int(options.get("port", 0)),
            dashboard_address=None if dashboard is None else str(dashboard),
        )
        await nursery.start(scheduler.serve)
        self.scheduler = scheduler
        await self._connect_scheduler(scheduler.address, nursery)
        return scheduler.address

    async def _close_scheduler(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.close()

    def _initial_jobs(self) -> int:
        return math.ceil(self.n_workers / self.processes)

    def _new_job(self, name: str) -> SLURMJob:
        return SLURMJob(self, name)

    def _job_addresses(self, job: SLURMJob) -> list[str]:
        return job._registered()

    def _job_logs(self, job: SLURMJob) -> dict[str, str]:
        key = f"SLURM job {job.job_id} {' '.join(job._registered())}".strip()
        return {key: "\n".join(job.log_lines())}

    def _scheduler_logs(self) -> str:
        return "\n".join(self._logs.lines.get("Scheduler", ()))

    @property
    def dashboard_link(self) -> str | None:
        """The URL of the scheduler's dashboard, or None."""
        return None if self.scheduler is None else self.scheduler.dashboard_link
