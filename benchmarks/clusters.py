"""The cluster both systems run on: started for a scenario, closed after it.

The shape is the same for both: a scheduler in a process of its own, ``n``
worker processes of one thread each, every worker supervised by a nanny, all
on ``tcp://127.0.0.1``; the client runs in the benchmark process.

* trioclust (it has no ``LocalCluster`` yet): ``python -m
  trioclust.runtime.scheduler_process``, and ``n`` :class:`trioclust.Nanny`
  objects in a trio loop on a thread of the benchmark process (where dask's
  ``LocalCluster`` keeps its nannies too), each starting ``python -m
  trioclust.runtime.worker_process``.
* dask: ``python -m distributed.cli.dask_scheduler`` and ``python -m
  distributed.cli.dask_worker --nworkers n --nthreads 1`` (one process holding
  the nannies, each starting a worker process), both with ``--no-dashboard``.
  The scheduler sits in its own process for the same reason as trioclust's:
  scenario f measures its memory, and a scheduler inside the client process
  (dask's ``LocalCluster``) would share the client's GIL in the others.
  Scenario a times each system's own ``LocalCluster`` (:class:`OwnLocalCluster`).

With ``--quick`` and ``--tiny`` (:data:`share_clusters`), scenarios b, c, d,
e and g share one cluster per system, since starting a cluster takes longer
than those scenarios do at that size. Every process started here is recorded
in :data:`STARTED`; the runner checks at the end that none is still alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import trio

STARTED: dict[int, tuple[str, float]] = {}
"""Every process the benchmarks started: pid -> (what it was, its creation time)."""

START_TIMEOUT = 60.0  # seconds a cluster may take to start before the benchmark fails
CLOSE_TIMEOUT = 20.0  # seconds a process may take to close after being asked, then SIGKILL
SYSTEMS = ("trioclust", "dask", "dask-saturation-inf")

_counter = iter(range(1, 1_000_000))


def log_dir() -> Path:
    path = Path(__file__).resolve().parent / "results" / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_process(pid: int, what: str) -> None:
    """Remember ``pid`` for the stray-process check at the end of the run."""
    with contextlib.suppress(psutil.Error):  # already gone: nothing to check
        STARTED[pid] = (what, psutil.Process(pid).create_time())


def _record_tree(pid: int, what: str) -> None:
    """Record ``pid`` and its descendants (dask's worker processes under its nannies)."""
    record_process(pid, what)
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            record_process(child.pid, f"child of {what}")


def stray_processes(timeout: float = 10.0) -> list[str]:
    """The recorded processes still alive after ``timeout`` seconds of grace."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid, (what, created) in STARTED.items():
            try:
                proc = psutil.Process(pid)
                # the same pid with another creation time is someone else's process
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} ({what})")
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, wait, then SIGKILL; always reaps."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(CLOSE_TIMEOUT)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@dataclass
class ClusterInfo:
    """What a scenario needs to know about a running cluster."""

    system: str
    scheduler_address: str
    scheduler_pid: int
    n_workers: int
    worker_pids: list[int] = field(default_factory=list)


# ------------------------------------------------------------------------- trioclust


class TrioclustCluster:
    """A scheduler process plus ``n_workers`` nannies in a trio loop on a thread."""

    def __init__(self, n_workers: int, *, label: str = "") -> None:
        self.n_workers = n_workers
        self.label = label or f"{next(_counter):02d}-trioclust"
        self.info: ClusterInfo | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._token: Any = None
        self._stop: Any = None
        self._error: BaseException | None = None

    def start(self) -> ClusterInfo:
        self._thread = threading.Thread(target=self._run, name=f"bench-{self.label}")
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise TimeoutError(f"the trioclust cluster {self.label} did not start in {START_TIMEOUT} s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        assert self.info is not None
        return self.info

    def close(self) -> None:
        if self._thread is None:
            return
        if self._token is not None and self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()
        self._thread = None
        if self._error is not None:
            raise self._error

    def __enter__(self) -> ClusterInfo:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            with open(log_dir() / f"{self.label}-scheduler.log", "wb") as log:
                trio.run(self._main, log)
        except BaseException as exc:  # handed to start() or close()
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self, log: Any) -> None:
        from trioclust import Nanny

        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trioclust.runtime.scheduler_process"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
        )
        record_process(proc.pid, f"trioclust scheduler {self.label}")
        try:
            with trio.fail_after(START_TIMEOUT):
                announced = await _read_line(proc.stdout)
            address = json.loads(announced)["address"]
            nannies = [Nanny(address, nthreads=1) for _ in range(self.n_workers)]
            async with trio.open_nursery() as nursery:
                async with trio.open_nursery() as starting:  # the nannies start side by side
                    for nanny in nannies:
                        starting.start_soon(nursery.start, nanny.serve)
                pids = [n.worker_pid for n in nannies if n.worker_pid is not None]
                for pid in pids:
                    record_process(pid, f"trioclust worker {self.label}")
                self.info = ClusterInfo("trioclust", address, proc.pid, self.n_workers, pids)
                self._ready.set()
                await self._stop.wait()
                async with trio.open_nursery() as closing:
                    for nanny in nannies:
                        closing.start_soon(nanny.close)
        finally:
            with trio.CancelScope(shield=True):
                await _close_scheduler_process(proc)


async def _read_line(stream: Any) -> str:
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            raise RuntimeError("the scheduler process exited before it reported its address")
        data += chunk
    return data.split(b"\n", 1)[0].decode()


async def _close_scheduler_process(proc: Any) -> None:
    """``close`` on stdin, then SIGTERM, then SIGKILL; always reaps."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await proc.stdin.send_all(b"close\n")
        await proc.stdin.aclose()
    with trio.move_on_after(CLOSE_TIMEOUT):
        await proc.wait()
    if proc.returncode is None:
        proc.terminate()
        with trio.move_on_after(CLOSE_TIMEOUT):
            await proc.wait()
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
    await proc.stdout.aclose()


# ------------------------------------------------------------------------------ dask


class DaskCluster:
    """``dask scheduler`` and ``dask worker --nworkers n`` processes.

    Args:
        n_workers: worker processes.
        saturation: ``distributed.scheduler.worker-saturation`` for the
            scheduler (e.g. ``"inf"``); dask's default when ``None``.
    """

    def __init__(self, n_workers: int, *, saturation: str | None = None, label: str = "") -> None:
        self.n_workers = n_workers
        self.saturation = saturation
        self.label = label or f"{next(_counter):02d}-dask"
        self.info: ClusterInfo | None = None
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> ClusterInfo:
        from distributed import Client

        logs = log_dir()
        scheduler_file = logs / f"{self.label}-scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        env = dict(os.environ)
        if self.saturation is not None:
            env["DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION"] = self.saturation
        common = ["--no-dashboard", "--scheduler-file", str(scheduler_file)]
        try:
            with open(logs / f"{self.label}-scheduler.log", "wb") as log:
                scheduler = subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_scheduler",
                     "--host", "127.0.0.1", "--port", "0", *common],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                )
            self._procs.append(scheduler)
            record_process(scheduler.pid, f"dask scheduler {self.label}")
            with open(logs / f"{self.label}-workers.log", "wb") as log:
                workers = subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker",
                     "--nworkers", str(self.n_workers), "--nthreads", "1",
                     "--memory-limit", "0", "--host", "127.0.0.1", *common],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                )
            self._procs.append(workers)
            record_process(workers.pid, f"dask nannies {self.label}")
            deadline = time.monotonic() + START_TIMEOUT
            while not scheduler_file.exists() or not scheduler_file.read_text().strip():
                if scheduler.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the dask scheduler {self.label} did not start")
                time.sleep(0.02)
            address = json.loads(scheduler_file.read_text())["address"]
            with Client(address, timeout=START_TIMEOUT, set_as_default=False) as client:
                client.wait_for_workers(self.n_workers, timeout=START_TIMEOUT)
                pids = sorted(client.run(os.getpid).values())
            _record_tree(workers.pid, f"dask nannies {self.label}")
            for pid in pids:
                record_process(pid, f"dask worker {self.label}")
            self.info = ClusterInfo("dask", address, scheduler.pid, self.n_workers, pids)
            return self.info
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        # workers first (their nannies stop them), then the scheduler
        for proc in reversed(self._procs):
            _stop(proc)
        self._procs.clear()

    def __enter__(self) -> ClusterInfo:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class OwnLocalCluster:
    """A system's own ``LocalCluster(n, threads_per_worker=1, processes=True)``, for scenario a.

    ``system`` is ``"trioclust"`` or ``"dask"``; both are built with the same
    arguments, so the scenario compares the same shape.
    """

    def __init__(self, system: str, n_workers: int) -> None:
        self.system = system
        self.n_workers = n_workers
        self._cluster: Any = None

    def start(self) -> ClusterInfo:
        if self.system == "trioclust":
            from trioclust import LocalCluster
        else:
            from distributed import LocalCluster

        self._cluster = LocalCluster(
            n_workers=self.n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        pids = [self._worker_pid(w) for w in self._cluster.workers.values()]
        pids = [pid for pid in pids if pid is not None]
        for pid in pids:
            record_process(pid, f"{self.system} LocalCluster worker")
        return ClusterInfo(
            self.system, self._cluster.scheduler_address, os.getpid(), self.n_workers, pids
        )

    def _worker_pid(self, worker: Any) -> int | None:
        if self.system == "trioclust":
            return worker.worker_pid
        return worker.process.process.pid

    def close(self) -> None:
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            cluster.close()


_shared: dict[tuple[str, int], tuple[Any, ClusterInfo]] = {}
share_clusters = False
"""When True (``--quick``, ``--tiny``), :func:`open_cluster` hands out one cluster per
system and size, kept until :func:`close_shared_clusters`: starting a dask cluster
takes seconds, more than the quick scenarios themselves."""


def _new_cluster(system: str, n_workers: int) -> TrioclustCluster | DaskCluster:
    if system == "trioclust":
        return TrioclustCluster(n_workers)
    if system == "dask":
        return DaskCluster(n_workers)
    if system == "dask-saturation-inf":
        return DaskCluster(n_workers, saturation="inf", label=f"{next(_counter):02d}-dask-inf")
    raise ValueError(f"unknown system {system!r}")


@contextlib.contextmanager
def open_cluster(system: str, n_workers: int, *, fresh: bool = False) -> Iterator[ClusterInfo]:
    """A cluster for ``system`` (one of :data:`SYSTEMS`): a new one, closed on exit,
    unless :data:`share_clusters` is set and ``fresh`` is not."""
    if share_clusters and not fresh:
        key = (system, n_workers)
        if key not in _shared:
            cluster = _new_cluster(system, n_workers)
            _shared[key] = (cluster, cluster.start())
        yield _shared[key][1]
        return
    with _new_cluster(system, n_workers) as info:
        yield info


def close_shared_clusters() -> None:
    while _shared:
        _, (cluster, _) = _shared.popitem()
        cluster.close()


@contextlib.contextmanager
def sync_client(info: ClusterInfo) -> Iterator[Any]:
    """A synchronous client of ``info``'s system, waited on until every worker is there."""
    if info.system == "trioclust":
        from trioclust import Client

        client: Any = Client(info.scheduler_address)
    else:
        from distributed import Client as DaskClient

        client = DaskClient(info.scheduler_address)  # the default client: distributed.wait needs one
    try:
        client.wait_for_workers(info.n_workers)
        yield client
    finally:
        client.close()


def is_dask(system: str) -> bool:
    return system.startswith("dask")
