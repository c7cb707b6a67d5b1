"""``SSHCluster``: a scheduler and workers on other machines, reached with the system ``ssh``.

Theory of operation
-------------------
The system ``ssh`` client, run with :func:`trio.run_process` semantics
(``trio.lowlevel.open_process``), brings what users already configured:
``~/.ssh/config``, agents, ``ProxyJump``, connection sharing. Each link is
one ``ssh`` process running ``python -m trioclust.deploy.remote`` on the
far side (:mod:`trioclust.deploy.remote`), which starts the scheduler or all
of one host's workers in one process, prints their addresses as a JSON line,
and closes them when its stdin ends. So the remote processes die when the
cluster closes its end of the pipe or when the connection drops, and one
connection per host carries all its workers (sshd's session caps are never
reached).

``hosts[0]`` runs the scheduler, every host listed after it runs one worker
job (``worker_options["n_workers"]`` workers, default 1). ``scale(n)`` adds
jobs round-robin over those hosts, or retires the newest. As in Dask,
``remote_python`` and ``connect_options`` may be one value or a list, one per
host (the first entry is the scheduler's); ``worker_options`` and
``scheduler_options`` are one dict each. ``setup`` is a list of shell
commands run before the remote process (``source venv/bin/activate``,
``module load python``).

``scheduler_options`` other than ``port`` and ``dashboard_address``, and
``worker_options`` other than ``n_workers``, ``nthreads`` and
``memory_limit``, are keyword arguments of the remote Scheduler and of each
remote Nanny/Worker (``worker_ttl``, ``reconnect_timeout``, ``env``, ...):
they are checked against those signatures here, before any connection, and
travel as JSON (``--options``).

A job that does not report its addresses within ``connect_timeout`` seconds
(ssh's ``ConnectTimeout`` plus Python's start-up), or whose ``ssh`` exits
first, raises :class:`~trioclust.errors.ClusterStartError` naming the host and
quoting ssh's and the remote side's last lines (``Permission denied``,
``python3: not found``, ``No module named trioclust``).
"""

from __future__ import annotations

import inspect
import json
import shlex
import subprocess
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

import trio

from trioclust import config
from trioclust.deploy.cluster import Cluster
from trioclust.errors import ClusterStartError
from trioclust.runtime.nanny import Nanny
from trioclust.runtime.scheduler import Scheduler
from trioclust.runtime.worker import Worker
from trioclust.sizes import parse_bytes

__all__ = ["SSHCluster"]

#: seconds ssh may take to connect, and the remote side to start and report
DEFAULT_CONNECT_TIMEOUT = 20.0
#: lines of a link's output kept for errors and get_logs()
LOG_LINES = 200


#: options SSHCluster itself turns into the remote module's arguments
_SCHEDULER_OWN = frozenset({"port", "dashboard_address"})
_WORKER_OWN = frozenset({"n_workers", "nthreads", "memory_limit"})
#: keyword arguments the remote module sets itself
_SET_REMOTELY = frozenset({"host", "address", "name", "scheduler_address", "security"})


def _per_host(value: Any, n: int, name: str) -> list[Any]:
    if isinstance(value, list):
        if len(value) != n:
            raise ValueError(
                f"{name} is a list of {len(value)} entries for {n} hosts: give one per host "
                f"(the first is the scheduler's), or one value for all"
            )
        return list(value)
    return [value] * n


def _forwarded(options: dict[str, Any], own: frozenset[str], target: Any, what: str) -> str:
    """The options ``target`` takes as keywords, as the remote module's ``--options`` JSON."""
    rest = {k: v for k, v in options.items() if k not in own}
    accepted = {
        name for name, p in inspect.signature(target).parameters.items()
        if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    } - _SET_REMOTELY
    accepted = {a for a in accepted if not a.startswith("_")}
    unknown = sorted(set(rest) - accepted)
    if unknown:
        raise TypeError(
            f"{what} {unknown} not understood by {target.__name__}; it takes "
            f"{sorted(accepted | own)}"
        )
    try:
        return json.dumps(rest) if rest else ""
    except TypeError as exc:
        raise TypeError(f"{what} travel to the remote host as JSON: {exc}") from None


class RemoteProcess:
    """One ``ssh HOST python -m trioclust.deploy.remote ...`` link (a job of SSHCluster).

    Args:
        host: the host ``ssh`` connects to.
        role: ``"scheduler"`` or ``"workers"``.
        arguments: the remote module's arguments after the role.
        connect_options: ``{"username":, "port":, "known_hosts":, "client_keys":, "options": [...]}``
            turned into ssh flags.
        remote_python: the python on the host (default ``python3``).
        setup: shell commands run before it.
        timeout: seconds to connect and start.
    """

    def __init__(
        self,
        host: str,
        role: str,
        arguments: list[str],
        *,
        connect_options: dict[str, Any] | None = None,
        remote_python: str | None = None,
        setup: Sequence[str] = (),
        timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.host = host
        self.role = role
        self.arguments = arguments
        self.connect_options = dict(connect_options or {})
        self.remote_python = remote_python or "python3"
        self.setup = list(setup)
        self.timeout = timeout
        self.name = host
        #: what the remote side reported: {"scheduler": ...} or {"workers": [...]}
        self.report: dict[str, Any] = {}
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self._process: trio.Process | None = None
        self._ended = trio.Event()

    def command(self) -> list[str]:
        """The ``ssh`` command line."""
        opts = self.connect_options
        cmd = ["ssh", "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(int(self.timeout), 1)}",
               "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if opts.get("known_hosts", ...) is None:
            cmd += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "LogLevel=ERROR"]
        if "port" in opts:
            cmd += ["-p", str(opts["port"])]
        if "username" in opts:
            cmd += ["-l", str(opts["username"])]
        keys = opts.get("client_keys") or []
        for key in [keys] if isinstance(keys, str) else keys:
            cmd += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        for option in opts.get("options", []):
            cmd += ["-o", str(option)]
        remote = " ".join(
            [shlex.quote(self.remote_python), "-m", "trioclust.deploy.remote", self.role]
            + [shlex.quote(a) for a in self.arguments]
        )
        script = " && ".join([*self.setup, f"exec {remote}"])
        return [*cmd, self.host, script]

    async def serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the link; started once the remote side reported its addresses."""
        process = await trio.lowlevel.open_process(
            self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._process = process
        try:
            async with trio.open_nursery() as nursery:
                reported = trio.Event()
                nursery.start_soon(self._read, reported)
                with trio.move_on_after(self.timeout):
                    await reported.wait()
                if "error" in self.report or not reported.is_set() or not self.report:
                    cause = (
                        "timed out" if not reported.is_set()
                        else "the connection ended before the remote side reported its address"
                    )
                    raise ClusterStartError(
                        f"Could not start the {self.role} on {self.host}: {cause} "
                        f"(within {self.timeout:g} s); its output ends with:\n"
                        + ("\n".join(self.lines) or "(nothing)")
                    )
                task_status.started(self)
                await process.wait()
                self._ended.set()
        finally:
            with trio.CancelScope(shield=True):
                await self._stop()
            self._ended.set()

    async def _read(self, reported: trio.Event) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        buffer = b""
        async for chunk in self._process.stdout:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace").rstrip()
                if not reported.is_set() and line.startswith("{"):
                    try:
                        self.report = json.loads(line)
                    except ValueError:
                        self.report = {}
                    else:
                        reported.set()
                        continue
                self.lines.append(line)
        if buffer:
            self.lines.append(buffer.decode(errors="replace"))
        reported.set()  # ended without a report: serve() says why

    async def _stop(self) -> None:
        """Close stdin (the remote side closes its servers), then escalate."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            await process.stdin.aclose()
        with trio.move_on_after(4 * config.get_float("runtime.close-timeout")):
            await process.wait()
            return
        process.terminate()
        with trio.move_on_after(config.get_float("runtime.close-timeout")):
            await process.wait()
            return
        process.kill()
        await process.wait()

    async def close(self) -> None:
        """End the link; the remote processes end with it."""
        if self._process is not None and self._process.stdin is not None:
            await self._process.stdin.aclose()
        await self._ended.wait()

    @property
    def addresses(self) -> list[str]:
        """The workers' addresses it reported."""
        return list(self.report.get("workers", []))


class SSHCluster(Cluster):
    """A scheduler on ``hosts[0]`` and workers on the others, over the system ``ssh``.

    Args:
        hosts: ``hosts[0]`` runs the scheduler; each later entry (the first
            host again, if listed twice) runs a worker job.
        connect_options: ssh settings, one dict or one per host:
            ``username``, ``port``, ``client_keys`` (key files),
            ``known_hosts`` (None: do not check host keys), ``options``
            (extra ``-o`` settings).
        worker_options: one dict for every host: ``n_workers`` (per host,
            default 1), ``nthreads`` (default 1), ``memory_limit`` (bytes or
            ``"4GiB"``, default none), and keyword arguments of the remote
            Nanny or Worker (``reconnect_timeout``, ``env``; with
            ``worker_class="trioclust.Worker"`` also ``heartbeat_interval``).
        scheduler_options: ``port`` (default 0: any), ``dashboard_address``,
            and keyword arguments of the remote Scheduler (``worker_ttl``,
            ``allowed_failures``).
        worker_class: ``"trioclust.Nanny"`` (default) or ``"trioclust.Worker"``.
        remote_python: the python to run, one path or one per host (default ``python3``).
        setup: shell commands run on each host before its process starts.
        connect_timeout: seconds to connect and start on a host.
        asynchronous: True inside async code.
        name: a name for the repr.
    """

    cluster_type = "SSHCluster"

    def __init__(
        self,
        hosts: Sequence[str],
        connect_options: dict[str, Any] | list[dict[str, Any]] | None = None,
        worker_options: dict[str, Any] | None = None,
        scheduler_options: dict[str, Any] | None = None,
        worker_class: str = "trioclust.Nanny",
        remote_python: str | list[str] | None = None,
        setup: Sequence[str] = (),
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        asynchronous: bool = False,
        name: str | None = None,
    ) -> None:
        hosts = list(hosts)
        if len(hosts) < 2:
            raise ValueError("SSHCluster needs at least two hosts: the scheduler's, then the workers'")
        if not isinstance(worker_options, dict | None) or not isinstance(scheduler_options, dict | None):
            raise TypeError(
                "worker_options and scheduler_options are one dict for all hosts (as in Dask); "
                "connect_options and remote_python may be lists, one per host"
            )
        worker_options = dict(worker_options or {})
        memory = worker_options.get("memory_limit") or 0
        super().__init__(
            asynchronous=asynchronous, name=name or uuid.uuid4().hex[:8],
            threads_per_worker=int(worker_options.get("nthreads", 1)),
            memory_limit=parse_bytes(memory) if memory else 0,
            workers_per_job=int(worker_options.get("n_workers", 1)),
        )
        self.hosts = hosts
        self.connect_options = _per_host(connect_options or {}, len(hosts), "connect_options")
        self.remote_python = _per_host(remote_python, len(hosts), "remote_python")
        self.scheduler_options = dict(scheduler_options or {})
        self.worker_options = worker_options
        self.worker_class = worker_class
        self._scheduler_json = _forwarded(
            self.scheduler_options, _SCHEDULER_OWN, Scheduler, "scheduler_options"
        )
        self._worker_json = _forwarded(
            worker_options, _WORKER_OWN, Nanny if worker_class.endswith("Nanny") else Worker,
            "worker_options",
        )
        self.setup = list(setup)
        self.connect_timeout = connect_timeout
        self._scheduler: RemoteProcess | None = None
        self._next_host = 0
        if not asynchronous:
            self._start_sync()

    def _link(self, index: int, role: str, arguments: list[str]) -> RemoteProcess:
        return RemoteProcess(
            self.hosts[index], role, arguments, connect_options=self.connect_options[index],
            remote_python=self.remote_python[index], setup=self.setup, timeout=self.connect_timeout,
        )

    async def _start_scheduler(self, nursery: trio.Nursery) -> str:
        options = self.scheduler_options
        arguments = ["--host", self.hosts[0], "--port", str(options.get("port", 0))]
        if options.get("dashboard_address"):
            arguments += ["--dashboard-address", str(options["dashboard_address"])]
        if self._scheduler_json:
            arguments += ["--options", self._scheduler_json]
        self._scheduler = self._link(0, "scheduler", arguments)
        await nursery.start(self._scheduler.serve)
        address = str(self._scheduler.report["scheduler"])
        await self._connect_scheduler(address, nursery)
        return address

    async def _close_scheduler(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.close()

    def _initial_jobs(self) -> int:
        return len(self.hosts) - 1

    def _new_job(self, name: str) -> RemoteProcess:
        index = 1 + self._next_host % (len(self.hosts) - 1)
        self._next_host += 1
        arguments = [
            "--scheduler", self._scheduler_address, "--host", self.hosts[index],
            "--n-workers", str(self.workers_per_job), "--nthreads", str(self.threads_per_worker),
            "--memory-limit", str(self.memory_limit), "--name", f"{self.hosts[index]}-{name}",
            "--worker-class", self.worker_class,
        ]
        if self._worker_json:
            arguments += ["--options", self._worker_json]
        return self._link(index, "workers", arguments)

    def _job_addresses(self, job: RemoteProcess) -> list[str]:
        return job.addresses

    def _job_logs(self, job: RemoteProcess) -> dict[str, str]:
        return {f"{job.host} {' '.join(job.addresses)}".strip(): "\n".join(job.lines)}

    def _scheduler_logs(self) -> str:
        return "\n".join(self._scheduler.lines) if self._scheduler is not None else ""

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's status page on the scheduler's host, or None."""
        if self._scheduler is None:
            return None
        link = self._scheduler.report.get("dashboard")
        return str(link) if link else None
