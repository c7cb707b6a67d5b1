"""How big a local cluster is: cores into workers x threads, memory per worker."""

from __future__ import annotations

import math

import psutil

from trioclust.sizes import parse_bytes


def cpu_count() -> int:
    """Cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(psutil.Process().cpu_affinity() or []) or psutil.cpu_count() or 1
    except (AttributeError, psutil.Error):
        return psutil.cpu_count() or 1


def total_memory() -> int:
    """Bytes of memory on this machine."""
    return int(psutil.virtual_memory().total)


def workers_and_threads(
    cores: int, n_workers: int | None, threads_per_worker: int | None, processes: bool
) -> tuple[int, int]:
    """Split ``cores`` into workers x threads the way dask's LocalCluster does.

    With neither given: up to 4 cores, one single-threaded worker per core;
    beyond that, the smallest factor of the core count at least its square
    root is the number of workers. Without processes, one worker gets every core.
    """
    if n_workers is None and threads_per_worker is None:
        if not processes:
            return 1, cores
        if cores <= 4:
            return cores, 1
        workers = min(f for f in range(1, cores + 1) if cores % f == 0 and f >= math.sqrt(cores))
        return workers, cores // workers
    if n_workers is None:
        assert threads_per_worker is not None
        return max(1, cores // threads_per_worker), threads_per_worker
    if threads_per_worker is None:
        return n_workers, max(1, cores // max(n_workers, 1))
    return n_workers, threads_per_worker


def memory_limit_per_worker(memory_limit: str | int | float | None, n_workers: int) -> int:
    """Bytes each worker may use; 0 means no limit.

    Args:
        memory_limit: ``"auto"`` (the machine's memory split evenly), a size
            (``"4GiB"``, bytes), a fraction of the machine (``0.5``), or
            ``None``/``0`` for no limit.
        n_workers: how many workers share the machine.
    """
    if memory_limit is None or memory_limit == 0:
        return 0
    if memory_limit == "auto":
        return total_memory() // max(n_workers, 1)
    if isinstance(memory_limit, float) and 0 < memory_limit <= 1:
        return int(total_memory() * memory_limit)
    return parse_bytes(memory_limit)
